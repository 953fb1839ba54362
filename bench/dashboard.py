"""The monitors' pages at scale: 10,000 monitors with a year of rollups, on a real server.

    .venv/bin/python bench/dashboard.py [--monitors 10000] [--days 365] [--hourly-days 90]
                                        [--requests 200]

Builds, on a data directory of its own (SQLite, or a fresh PostgreSQL database when
DATABASE_URL is set, as the tests do), one organization with `--monitors` monitors
(mostly up, some down with open incidents, some paused) and the history onwatch keeps
for a year: a daily rollup per monitor per day for `--days` days and an hourly one per
hour for `--hourly-days` days (rollups.py keeps hours 90 days). The rollups are made with
INSERT ... SELECT in the database, a monitor block at a time: millions of rows in
seconds, where building them in Python would take minutes.

Then starts a real `onwatch web`, signs a viewer in (a session made directly, as a
sign-in with password and TOTP would leave it) and times, over one kept-alive
connection, GET of: the monitor list (first pages, a state filter, a name search), one
monitor's page (90 daily bars, 24 h and 30 d charts) and the dashboard. Every answer must
be a 200 carrying what the page should show, or the run stops.

Prints p50/p95/max per page, with a one-line summary last. Target: p95 under 500 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import Running, django, isolated, wait_http  # noqa: E402

TARGET_P95_MS = 500.0

SETUP = """
import random, time
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from onwatch.alerts.models import Incident
from onwatch.core.models import Membership, Organization
from onwatch.uptime.models import Kind, Monitor, State, StateChange

random.seed(7)
now = timezone.now()
org = Organization.objects.create(name="Bench")
user = get_user_model().objects.create_user(username="viewer@bench.example",
                                            email="viewer@bench.example", password="x" * 20)
Membership.objects.create(org=org, user=user, role="viewer")
TOTP.activate(user, generate_totp_secret())  # enrolled: the MFA gate lets the member in

KINDS = [Kind.HTTP] * 7 + [Kind.TCP, Kind.DNS, Kind.HEARTBEAT]
CONFIG = {
    Kind.HTTP: lambda i: {"url": f"https://site{i}.example.com/health"},
    Kind.TCP: lambda i: {"host": f"db{i}.internal", "port": 5432},
    Kind.DNS: lambda i: {"name": f"site{i}.example.com"},
    Kind.HEARTBEAT: lambda i: {"period": 3600},
}

def state_of(i):
    # About 1 % down, 1 % paused, 1 % pending; the rest up.
    return [State.DOWN, State.PAUSED, State.PENDING][i // 33 % 3] if i % 33 == 0 else State.UP

def monitor(i):
    kind = KINDS[i % len(KINDS)]
    s = state_of(i)
    return Monitor(
        org=org, name=f"service {i:05}", kind=kind, config=CONFIG[kind](i),
        state=s, enabled=s != State.PAUSED,
        state_since=now - timedelta(minutes=random.randint(1, 60 * 24 * 60)),
        last_checked_at=now - timedelta(seconds=random.randint(1, 60)),
        last_latency_ms=random.randint(20, 400),
        next_check_at=now + timedelta(seconds=random.randint(1, 60)),
    )

started = time.monotonic()
Monitor.objects.bulk_create((monitor(i) for i in range(MONITORS)), batch_size=2000)
down = list(Monitor.objects.filter(org=org, state=State.DOWN).values_list("id", "name"))
Incident.objects.bulk_create(
    Incident(org=org, source=f"uptime.monitor:{pk}", title=f"{name} is down")
    for pk, name in down
)
first = Monitor.objects.filter(org=org, kind=Kind.HTTP).order_by("id").first()
StateChange.objects.bulk_create(
    StateChange(monitor=first, at=now - timedelta(days=k), old=State.UP, new=State.DOWN,
                evidence={"ok": False, "status": 503, "latency_ms": 40 + k,
                           "error": "status 503 is not accepted",
                           "body": "<h1>Service Unavailable</h1>" * 10})
    for k in range(40)
)
print(json.dumps({"org": org.pk, "user": user.pk, "detail": first.pk,
                  "down": len(down), "seconds": time.monotonic() - started}))
"""

# One period's rollups for a block of monitors, made by the database itself from a small
# table of period starts: portable SQL (SQLite and PostgreSQL), monitor-major order.
ROLLUPS = """
import time
from datetime import timedelta
from django.db import connection, transaction
from django.utils import timezone
from onwatch.uptime import rollups
from onwatch.uptime.models import Monitor, Rollup

now = timezone.now()
block = 500
kinds = {"h": (HOURLY_DAYS * 24, rollups.floor_hour(now), timedelta(hours=1), 60),
         "d": (DAYS, rollups.floor_day(now), timedelta(days=1), 1440)}
ops = connection.ops
start_type = Rollup._meta.get_field("start").db_type(connection)
ids = list(Monitor.objects.order_by("id").values_list("id", flat=True))
made = {}
started = time.monotonic()
with connection.cursor() as cur:
    for period, (count, last, step, checks) in kinds.items():
        cur.execute("DROP TABLE IF EXISTS bench_starts")
        cur.execute(f"CREATE TABLE bench_starts (n integer, start {start_type})")
        starts = [(n, ops.adapt_datetimefield_value(last - n * step)) for n in range(count)]
        cur.executemany("INSERT INTO bench_starts (n, start) VALUES (%s, %s)", starts)
        for low in range(0, len(ids), block):
            chunk = ids[low:low + block]
            with transaction.atomic():
                cur.execute(
                    "INSERT INTO uptime_rollup "
                    "(monitor_id, period, start, checks, failures, latency_sum_ms, latency_max_ms) "
                    "SELECT m.id, %s, s.start, %s, "
                    # A failure here and there, so the bars are not all the same green.
                    "  CASE WHEN (m.id * 7 + s.n * 13) %% 211 = 0 THEN 3 ELSE 0 END, "
                    "  (%s - CASE WHEN (m.id * 7 + s.n * 13) %% 211 = 0 THEN 3 ELSE 0 END) "
                    "    * (40 + (m.id + s.n * 17) %% 160), "
                    "  70 + (m.id + s.n * 17) %% 160 "
                    "FROM uptime_monitor m CROSS JOIN bench_starts s "
                    "WHERE m.id >= %s AND m.id <= %s",
                    [period, checks, checks, chunk[0], chunk[-1]],
                )
        made[period] = Rollup.objects.filter(period=period).count()
    cur.execute("DROP TABLE bench_starts")
print(json.dumps({"hourly": made["h"], "daily": made["d"],
                  "seconds": time.monotonic() - started}))
"""

SESSION = """
import time
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from onwatch.accounts.middleware import SIGNED_IN_AT

user = get_user_model().objects.get(pk=USER)
# What django.contrib.auth.login leaves in a session, after password and TOTP.
s = SessionStore()
s[SESSION_KEY] = str(user.pk)
s[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
s[HASH_SESSION_KEY] = user.get_session_auth_hash()
s[SIGNED_IN_AT] = time.time()
s.create()
print(json.dumps({"cookie": f"{settings.SESSION_COOKIE_NAME}={s.session_key}"}))
"""


class Client:
    """One kept-alive connection, as a browser holds; reopened if the server drops it."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port, self.cookie = port, cookie
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[float, int, str]:
        for attempt in (1, 2):
            try:
                started = time.perf_counter()
                self.conn.request("GET", path, headers={"Cookie": self.cookie})
                resp = self.conn.getresponse()
                body = resp.read().decode()
                return (time.perf_counter() - started) * 1000, resp.status, body
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("not reached")


def pages(detail: int, monitors: int) -> dict[str, tuple[list[str], str]]:
    """Page name -> (paths taken in turn, text each answer must contain)."""
    last_page = -(-monitors // 50)
    return {
        "monitor list": (
            [f"/monitors/?page={n}" for n in (1, 2, 3, 4, 5)],
            f"of {last_page} ({monitors} monitors)",
        ),
        "list, down only": (["/monitors/?state=down"], '<tr class="monitor-down">'),
        "list, name search": (["/monitors/?q=service+0012"], "service 00120"),
        "monitor detail": ([f"/monitors/{detail}/"], 'class="response-chart"'),
        "dashboard": (["/"], 'class="cards uptime-summary"'),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(client: Client, paths: list[str], must: str, requests: int) -> list[float]:
    for path in paths:  # warm: templates compiled, database pages cached
        client.get(path)
    times = []
    for i in range(requests):
        path = paths[i % len(paths)]
        ms, status, body = client.get(path)
        if status != 200 or must not in body:
            raise SystemExit(f"GET {path} answered {status} without {must!r}:\n{body[:2000]}")
        times.append(ms)
    return times


def run_json(code: str, env: dict[str, str], **kw: object) -> dict[str, Any]:
    """Run setup code in a process of its own; its last line of output is JSON."""
    out = django(code, env, **kw)  # type: ignore[arg-type]
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def build(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    code = SETUP.replace("MONITORS", str(args.monitors))
    made = run_json(code, env, migrate=True, timeout=600)
    print(f"built {args.monitors:,} monitors, {made['down']} down: {made['seconds']:.1f} s")
    code = ROLLUPS.replace("HOURLY_DAYS", str(args.hourly_days)).replace("DAYS", str(args.days))
    rolled = run_json(code, env, timeout=3600)
    print(
        f"built {rolled['hourly']:,} hourly and {rolled['daily']:,} daily rollups: "
        f"{rolled['seconds']:.1f} s"
    )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--hourly-days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, isolated(Path(tmp)) as env:
        made = build(env, args)
        cookie = run_json(SESSION.replace("USER", str(made["user"])), env)
        with Running(["web"], env) as web:
            wait_http(f"{web.base_url}/health/", timeout=60)
            client = Client(int(env["ONWATCH_PORT"]), cookie["cookie"])
            results = {}
            for name, (paths, must) in pages(made["detail"], args.monitors).items():
                times = measure(client, paths, must, args.requests)
                results[name] = times
                print(
                    f"{name:18} p50 {statistics.median(times):6.1f} ms  "
                    f"p95 {percentile(times, 95):6.1f} ms  max {max(times):6.1f} ms  "
                    f"({len(times)} requests)"
                )
    worst = max(results, key=lambda n: percentile(results[n], 95))
    worst_p95 = percentile(results[worst], 95)
    verdict = "under" if worst_p95 < TARGET_P95_MS else "OVER"
    print(
        f"summary: {args.monitors:,} monitors, {args.days} days of rollups; "
        + ", ".join(f"{n} p95 {percentile(t, 95):.0f} ms" for n, t in results.items())
        + f"; worst p95 {worst_p95:.0f} ms ({worst}), {verdict} the {TARGET_P95_MS:.0f} ms target"
    )


if __name__ == "__main__":
    main()
