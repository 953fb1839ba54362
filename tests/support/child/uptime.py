"""Child-process functions on monitors (see tests.support.child)."""

from __future__ import annotations

import json
from typing import Any

from onwatch.core.models import Organization
from onwatch.uptime.models import Kind, Monitor, Ping


def add_monitor(org_name: str, name: str, kind: str, config: Any) -> None:
    # Any: the encrypted field is typed by what it stores (text), set by what it holds.
    org, _ = Organization.objects.get_or_create(name=org_name)
    Monitor.objects.create(org=org, name=name, kind=kind, config=config)


def print_monitor_config(name: str) -> None:
    """The monitor's settings as JSON on stdout, decrypted as onwatch reads them."""
    print(json.dumps(Monitor.objects.get(name=name).config))


def add_heartbeat(org_name: str, name: str) -> None:
    """A heartbeat that one ping brings up; its ping id as JSON on stdout."""
    org, _ = Organization.objects.get_or_create(name=org_name)
    config: Any = {"period": 3600, "grace": 300}  # as in add_monitor
    m = Monitor.objects.create(
        org=org, name=name, kind=Kind.HEARTBEAT, confirmations=1, config=config
    )
    print(json.dumps(str(m.ping_id)))


def print_ping_count() -> None:
    print(json.dumps(Ping.objects.count()))


def print_ping_addresses() -> None:
    """The address each stored ping came from, oldest first, as JSON."""
    print(json.dumps(list(Ping.objects.order_by("id").values_list("remote_addr", flat=True))))
