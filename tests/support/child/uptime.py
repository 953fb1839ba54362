"""Child-process functions on monitors (see tests.support.child)."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Count

from onwatch.core.models import Organization
from onwatch.uptime.models import Kind, Monitor, Ping, State


def add_monitor(org_name: str, name: str, kind: str, config: Any) -> None:
    # Any: the encrypted field is typed by what it stores (text), set by what it holds.
    org, _ = Organization.objects.get_or_create(name=org_name)
    Monitor.objects.create(org=org, name=name, kind=kind, config=config)


def print_monitor_config(name: str) -> None:
    """The monitor's settings as JSON on stdout, decrypted as onwatch reads them."""
    print(json.dumps(Monitor.objects.get(name=name).config))


def add_heartbeats(count: int) -> None:
    """`count` new heartbeats of one organization; their ping UUIDs as JSON on stdout."""
    org = Organization.objects.create(name="Load")
    config: Any = {"period": 3600}  # as in add_monitor
    made = [
        Monitor.objects.create(org=org, name=f"job {i}", kind=Kind.HEARTBEAT, config=config)
        for i in range(count)
    ]
    print(json.dumps([str(m.ping_id) for m in made]))


def print_ping_counts() -> None:
    """Pings stored per heartbeat UUID, and how many monitors are up, as JSON on stdout."""
    per = dict(Ping.objects.values_list("monitor__ping_id").annotate(n=Count("id")))
    up = Monitor.objects.filter(state=State.UP).count()
    print(json.dumps([{str(k): v for k, v in per.items()}, up]))
