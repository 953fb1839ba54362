"""Child-process functions on monitors (see tests.support.child)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q

from onwatch.core.models import Organization
from onwatch.uptime.models import CheckResult, Kind, Monitor, Ping, State
from tests.support.child import wait_until


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


def add_http_monitors(url: str, n: int) -> None:
    """n monitors of `url` for "Acme", each checked every second."""
    org, _ = Organization.objects.get_or_create(name="Acme")
    config: Any = {"url": url}  # Any: as in add_monitor
    Monitor.objects.bulk_create(
        Monitor(
            org=org,
            name=f"site {i}",
            kind="http",
            config=config,
            interval=1,
            retry_interval=1,
            timeout=5,
        )
        for i in range(n)
    )


def wait_each_checked(n: int, after: float = 0) -> None:
    """Until every monitor has n checks made after `after` (a Unix timestamp)."""
    since = datetime.fromtimestamp(after, UTC)
    counted = Monitor.objects.annotate(n=Count("results", filter=Q(results__at__gt=since)))
    wait_until(lambda: min(counted.values_list("n", flat=True)) >= n, timeout=60)


def print_checks() -> None:
    """When each monitor was checked (monitor id -> Unix timestamps, oldest first) and how
    many monitors are still claimed, as JSON."""
    times: dict[int, list[float]] = defaultdict(list)
    for monitor_id, at in CheckResult.objects.order_by("at").values_list("monitor_id", "at"):
        times[monitor_id].append(at.timestamp())
    claimed = Monitor.objects.exclude(claimed_by="").count()
    print(json.dumps({"times": times, "claimed": claimed}))


def kill_while_holding(name: str, pid: int) -> None:
    """Once the prober `name` holds claims, kill it (process `pid`); when, and what it
    held (monitor id -> end of its lease, as Unix timestamps), as JSON."""
    held = Monitor.objects.filter(claimed_by=name)
    wait_until(held.exists, timeout=30)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    time.sleep(0.5)  # dead for sure: what it held now stays held until the lease runs out
    until = dict(held.values_list("id", "claimed_until"))
    print(json.dumps({"killed": killed, "held": until}, default=datetime.timestamp))


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
