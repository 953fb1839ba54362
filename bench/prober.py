"""The prober at scale: 10,000 HTTP monitors at a 60 s interval against a local target.

    .venv/bin/python bench/prober.py [--monitors 10000] [--interval 60] [--rounds 2]
                                     [--downtime 300]

Runs a real `onwatch prober` on a data directory of its own (SQLite, or a fresh
PostgreSQL database when DATABASE_URL is set, as the tests do) against a fast HTTP server
in a separate process, in two phases:

1. steady: the monitors' first checks are spread over one interval, as on a system that
   has been running a while; the prober runs for `--rounds` intervals. Measured: lateness
   of every check (actual start − scheduled time, from the stored results: the first
   check against the monitor's next_check_at, each later one against the previous start
   plus the interval), the prober's CPU (utime + stime over wall time, from /proc) and
   its peak resident memory (VmHWM).
2. restart: the prober is stopped, onwatch is taken to have been down for `--downtime`
   seconds (every monitor overdue), and a new prober is started. Measured: the time from
   starting the process until every monitor has been checked once; then one more
   interval, whose lateness shows how the schedule settles after the burst (the prober
   brings the next check of an overdue monitor forward by a random part of its lateness;
   that due time is read from the database once every monitor has been checked).

Every figure is printed, with a one-line summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import Running, django, free_port, isolated  # noqa: E402

TARGET = """
from aiohttp import web

async def ok(request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=%d, print=None, access_log=None)
"""

PARKED = "datetime(2100, 1, 1, tzinfo=UTC)"

SETUP = """
import random
from datetime import UTC, datetime, timedelta
from onwatch.core.models import Organization
from onwatch.uptime.models import Monitor
org = Organization.objects.create(name="Bench")
# Parked far ahead, spread over one interval; SCHEDULE brings them forward.
start = PARKED
Monitor.objects.bulk_create(
    (
        Monitor(org=org, name=f"site {{i}}", kind="http", interval={interval},
                config={{"url": "{url}/site/" + str(i)}},
                next_check_at=start + timedelta(seconds=random.uniform(0, {interval})))
        for i in range({n})
    ),
    batch_size=1000,
)
print(Monitor.objects.count())
""".replace("PARKED", PARKED)

# Brings the parked schedule forward to start `lead` seconds from now, in one UPDATE
# (the spread is kept), and prints every monitor's due time: what lateness counts from.
SCHEDULE = """
from datetime import UTC, datetime, timedelta
from django.db.models import F
from django.utils import timezone
from onwatch.uptime.models import Monitor
shift = PARKED - (timezone.now() + timedelta(seconds={lead}))
Monitor.objects.update(next_check_at=F("next_check_at") - shift)
due = Monitor.objects.values_list("id", "next_check_at")
print(json.dumps({{str(i): t.timestamp() for i, t in due}}))
""".replace("PARKED", PARKED)

# Everything overdue, as after `downtime` seconds without a prober.
OVERDUE = """
from datetime import timedelta
from django.db.models import F
from onwatch.uptime.models import Monitor
Monitor.objects.update(next_check_at=F("next_check_at") - timedelta(seconds={downtime}))
"""

SNAPSHOT = """
from onwatch.uptime.models import Monitor
due = Monitor.objects.values_list("id", "next_check_at")
print(json.dumps({str(i): t.timestamp() for i, t in due}))
"""

# Lateness of each check after `since` (epoch seconds), given each monitor's due time
# at that moment (the snapshot file).
LATENESS = """
from collections import defaultdict
from datetime import datetime, UTC
from itertools import pairwise
from onwatch.uptime.models import CheckResult
due = {{int(k): v for k, v in json.load(open("{snapshot}")).items()}}
second_due = {{int(k): v for k, v in json.load(open("{second}")).items()}} if "{second}" else {{}}
since = datetime.fromtimestamp({since}, UTC)
times = defaultdict(list)
failed = 0
rows = CheckResult.objects.filter(at__gte=since).order_by("at")
for monitor_id, at, ok in rows.values_list("monitor_id", "at", "ok").iterator(chunk_size=5000):
    times[monitor_id].append(at.timestamp())
    failed += not ok
first, rest, unknown = [], [], 0
for monitor_id, ats in times.items():
    first.append(ats[0] - due[monitor_id])
    for i, (a, b) in enumerate(pairwise(ats)):
        expected = a + {interval}
        if i == 0 and monitor_id in second_due:
            # After a restart the prober brings the next check of an overdue monitor
            # forward: its due time is the one read once every first check was written,
            # unless the second check had been written by then too.
            if abs(second_due[monitor_id] - (b + {interval})) < 0.001:
                unknown += 1
                continue
            expected = second_due[monitor_id]
        rest.append(b - expected)
print(json.dumps({{"first": first, "rest": rest, "unknown": unknown,
                  "monitors": len(times), "failed": failed}}))
"""

# Waits until every monitor has been checked since `since`, then prints every monitor's
# due time at that moment.
UNCHECKED_SINCE = """
from datetime import datetime, UTC
from onwatch.uptime.models import Monitor
since = datetime.fromtimestamp({since}, UTC)
wait_until(
    lambda: not Monitor.objects.exclude(last_checked_at__gte=since).exists(), timeout={timeout}
)
due = Monitor.objects.values_list("id", "next_check_at")
print(json.dumps({{str(i): t.timestamp() for i, t in due}}))
"""


@dataclass
class Usage:
    cpu: float  # seconds of CPU (user + system)
    wall: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        # Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the name.
        return cls(cpu=(int(fields[11]) + int(fields[12])) / ticks, wall=time.monotonic())

    def share_until(self, later: Usage) -> float:
        return (later.cpu - self.cpu) / (later.wall - self.wall)


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the target did not listen on {port}") from None
            time.sleep(0.1)


def lateness(
    env: dict[str, str], snapshot: Path, since: float, interval: int, second: Path | None = None
) -> dict[str, object]:
    code = LATENESS.format(snapshot=snapshot, second=second or "", since=since, interval=interval)
    found: dict[str, object] = json.loads(django(code, env, timeout=300))
    return found


def snapshot(env: dict[str, str], path: Path) -> None:
    path.write_text(django(SNAPSHOT, env))


def describe(name: str, late: list[float]) -> str:
    return (
        f"{name}: {len(late)} checks, lateness p50 {percentile(late, 0.5):.3f} s, "
        f"p99 {percentile(late, 0.99):.3f} s, max {max(late, default=float('nan')):.3f} s"
    )


def steady_phase(
    env: dict[str, str], args: argparse.Namespace, work: Path
) -> tuple[list[float], float, int, float]:
    snap = work / "steady.json"
    began = time.time()
    with Running(["prober"], env) as prober:
        prober.wait_for("ready", timeout=60)
        ready = time.time() - began
        print(f"prober ready after {ready:.1f} s; the first checks are due {args.lead} s later")
        since = time.time()
        snap.write_text(django(SCHEDULE.format(lead=args.lead), env))
        before = Usage.of(prober.proc.pid)
        # From when the schedule surely stands: every monitor gets `rounds` checks.
        time.sleep(args.lead + args.rounds * args.interval)
        after = Usage.of(prober.proc.pid)
        peak = memory_kib(prober.proc.pid, "VmHWM")
        now = memory_kib(prober.proc.pid, "VmRSS")
        assert prober.stop() == 0, "the prober did not stop cleanly"
    found = lateness(env, snap, since, args.interval)
    first, rest = found["first"], found["rest"]
    assert isinstance(first, list) and isinstance(rest, list)
    late = first + rest
    print(f"steady: {found['monitors']} monitors checked, {found['failed']} checks failed")
    print(describe("steady", late))
    cpu = before.share_until(after)
    print(f"steady: prober CPU {cpu:.3f} of one core; RSS {now // 1024} MB, peak {peak // 1024} MB")
    for line in prober.lines:
        if "p99 lateness" in line:
            print("  prober says:", line.split(": ", 1)[1])
    return late, cpu, peak, ready


def restart_phase(
    env: dict[str, str], args: argparse.Namespace, work: Path
) -> tuple[float, list[float], list[float], float, int]:
    django(OVERDUE.format(downtime=args.downtime), env)
    snap = work / "restart.json"
    snapshot(env, snap)
    since = time.time()
    with Running(["prober"], env) as prober:
        second = work / "second.json"
        code = UNCHECKED_SINCE.format(since=since, timeout=args.interval * 3)
        second.write_text(django(code, env, timeout=600))
        all_checked = time.time() - since
        print(f"restart: every monitor checked once {all_checked:.1f} s after the prober started")
        before = Usage.of(prober.proc.pid)
        time.sleep(args.interval)
        after = Usage.of(prober.proc.pid)
        peak = memory_kib(prober.proc.pid, "VmHWM")
        assert prober.stop() == 0, "the prober did not stop cleanly"
    found = lateness(env, snap, since, args.interval, second)
    first, later = found["first"], found["rest"]
    assert isinstance(first, list) and isinstance(later, list)
    # The first checks were overdue by up to `downtime` on purpose; the rest show whether
    # the schedule keeps its time after that burst.
    print(describe("restart, the checks after the first", later))
    print(f"  ({found['unknown']} second checks left out: made before their due time was read)")
    cpu = before.share_until(after)
    print(f"restart: prober CPU in the next interval {cpu:.3f} of one core; peak {peak // 1024} MB")
    return all_checked, first, later, cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2, help="intervals of the steady phase")
    parser.add_argument("--downtime", type=int, default=300, help="seconds onwatch was down")
    parser.add_argument("--lead", type=int, default=5, help="seconds before the first check")
    args = parser.parse_args()

    port = free_port()
    target = subprocess.Popen([sys.executable, "-c", TARGET % port], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="onwatch-bench-prober-"))
    try:
        wait_port(port)
        with isolated(work) as env:
            made = django(
                SETUP.format(
                    n=args.monitors,
                    interval=args.interval,
                    url=f"http://127.0.0.1:{port}",
                ),
                env,
                migrate=True,
                timeout=300,
            )
            print(f"{made.strip()} HTTP monitors at {args.interval} s; load {os.getloadavg()}")
            late, cpu, peak, _ = steady_phase(env, args, work)
            restart, _, after_restart, cpu2, peak2 = restart_phase(env, args, work)
    finally:
        target.terminate()
        target.wait()
    p99 = percentile(late, 0.99)
    print(f"load average at the end: {os.getloadavg()}")
    print(
        f"SUMMARY prober: {args.monitors} monitors @ {args.interval} s: p99 lateness "
        f"{p99:.2f} s (target < 2), CPU {max(cpu, cpu2):.2f} core (< 0.5), peak RSS "
        f"{max(peak, peak2) / 1024:.0f} MB (< 400), all checked {restart:.1f} s after a restart "
        f"(< {args.interval}); p99 after the restart {percentile(after_restart, 0.99):.2f} s"
    )


if __name__ == "__main__":
    main()
