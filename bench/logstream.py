"""How many people can follow live logs at once: viewers of running jobs over server-sent
events from a real `onwatch web` (two web processes, the default).

    .venv/bin/python bench/logstream.py [--viewers 50,200,500] [--jobs 10] [--seconds 15]

Starts `onwatch web` on a data directory of its own (SQLite, or a fresh PostgreSQL
database when DATABASE_URL is set, as the tests do) with `--jobs` running jobs, then for
each number of viewers opens that many event streams from this process (asyncio, spread
over the jobs) while another process appends a line to every job twice a second, each
line carrying the time it was written. Prints, per number of viewers: the web processes'
CPU (percent of one core) while they follow, the delay from a line's commit to its event
(p50, p99, max over every viewer), and the streams that failed. The load average is
printed too: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pings import cpu_seconds  # noqa: E402
from tests.support.procs import Running, django, isolated, wait_http  # noqa: E402

SETUP = """
from django.contrib.auth import get_user_model
from django.test import Client
from onwatch.core.models import Job, JobState, Membership, Organization
org = Organization.objects.create(name="Bench")
user = get_user_model().objects.create_user(username="v@bench.example", password="x" * 20)
Membership.objects.create(org=org, user=user, role="viewer")
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
TOTP.activate(user, generate_totp_secret())
jobs = [Job.objects.create(org=org, kind="core.sleep", state=JobState.RUNNING).pk
        for _ in range({n})]
client = Client()
client.force_login(user)
print(json.dumps({{"jobs": jobs, "cookie": client.cookies["sessionid"].value}}))
"""
LAST = """
from django.db.models import Max
from onwatch.core.models import JobLogLine
print(JobLogLine.objects.aggregate(m=Max("id"))["m"] or 0)
"""
WRITER = """
from onwatch.core import jobs
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    for job in {jobs}:
        jobs.append_line(job, f"tick {{time.time()}}")
    time.sleep(0.5)
"""


async def viewer(port: int, path: str, cookie: str, delays: list[float], until: float) -> bool:
    """Follows one stream until `until`; True if it stayed open and well-formed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: sessionid={cookie}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    ok = (await reader.readline()).startswith(b"HTTP/1.1 200")
    try:
        while ok and (left := until - time.monotonic()) > 0:
            line = await asyncio.wait_for(reader.readline(), left)
            if not line:
                return False
            if line.startswith(b"data: "):
                text = json.loads(line[6:])["html"]
                if text.startswith("tick "):
                    delays.append(time.time() - float(text.split()[1]))
    except TimeoutError:
        pass
    finally:
        writer.close()
    return ok


async def round_of(
    port: int, n: int, jobs: list[int], cookie: str, seconds: float, after: int
) -> tuple[list[float], int]:
    delays: list[float] = []
    until = time.monotonic() + seconds
    paths = [f"/jobs/{jobs[i % len(jobs)]}/events/?after={after}" for i in range(n)]
    done = await asyncio.gather(
        *(viewer(port, p, cookie, delays, until) for p in paths), return_exceptions=True
    )
    return delays, sum(1 for d in done if d is not True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", default="50,200,500")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, isolated(Path(tmp)) as env:
        made = json.loads(django(SETUP.format(n=args.jobs), env, migrate=True).splitlines()[-1])
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/")
            port = int(env["ONWATCH_PORT"])
            for n in [int(v) for v in args.viewers.split(",")]:
                report(n, port, made, env, web, args)


def report(n: int, port: int, made: dict[str, Any], env: dict[str, str], web: Running,
           args: argparse.Namespace) -> None:  # fmt: skip
    code = WRITER.format(seconds=args.seconds + 2, jobs=made["jobs"])
    # From the newest line on: the lines of earlier rounds are not this round's delays.
    last = int(django(LAST, env).split()[-1])
    loop = asyncio.new_event_loop()
    cpu = cpu_seconds(web.proc.pid)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        wrote = pool.submit(django, code, env, False, args.seconds + 120)
        delays, failed = loop.run_until_complete(
            round_of(port, n, made["jobs"], made["cookie"], args.seconds + 4, last)
        )
        wrote.result()
    loop.close()
    used = (cpu_seconds(web.proc.pid) - cpu) / (time.monotonic() - started) * 100
    p50, p99 = percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000
    print(
        f"{n:5d} viewers: web CPU {used:5.1f} % of a core, line → event "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(delays, default=float('nan')) * 1000:.0f} ms over {len(delays)} events; "
        f"{failed} streams failed; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
