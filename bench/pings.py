"""Heartbeat ingest: how many pings a real `onwatch web` accepts per second, and how fast.

    .venv/bin/python bench/pings.py [--monitors 1000] [--seconds 20] [--concurrency 32]
                                    [--keepalive] [--wal-limit-mb 16] [--paced-ms 10]

Starts `onwatch web` on a data directory of its own (SQLite, or a fresh PostgreSQL
database when DATABASE_URL is set, as the tests do), creates N heartbeats, then fires
success pings at random heartbeats from this process over loopback: `--concurrency`
clients, each sending its next ping when the last one was answered, for `--seconds`.
By default every ping opens a new connection, as a cron job's `curl` does. Afterwards the
stored pings are counted, so an "accepted" ping is one the database really holds.

Two latencies, each of every answered ping, none left out:
- the load's: from the moment a client sends a ping to the moment it has read the whole
  answer (with wrk, as wrk times it: connecting not included). wrk's own p99 is printed
  beside it but is not a measurement: it adds made-up samples for every slow answer
  (see WRK_SCRIPT): 150-530 ms where a probe beside it saw 25-32.
- paced pings' (`--paced-ms`): one every 20 ms beside the load, each sent when due on a
  new connection whether or not the last was answered, as independent cron jobs send
  them; timed from the moment it was due, connecting included. The load's clients wait
  for each answer, so they send little while the server is held up; these do not.
The target (2,000 pings/s with p99 < 50 ms) is met when both p99s are under 50 ms.

For scale, the same load is first fired at a do-nothing ASGI app under the same uvicorn
(`noop`): the ceiling of the HTTP server alone on this machine at this moment, and its CPU
per answer beside the web process's CPU per ping (children included, if any). Success
pings of heartbeats that are up take the fast route of the ingest layer ahead of Django
(onwatch/core/ingest, onwatch/uptime/fastping.py); the warm-up pings that bring them up
go through Django.

Where the time of the fast route's batches went (waiting for the writer thread, for the
other web process's writer, for SQLite's write lock, writing, committing, answering) is
printed after the figures, from the web processes' own measurements
(ONWATCH_INGEST_TIMINGS, onwatch/core/ingest/timings.py). On SQLite the WAL file's
largest size during the load is printed too; `--wal-limit-mb` sets the size past which
onwatch empties it (ONWATCH_SQLITE_WAL_LIMIT_MB; a huge one compares with a WAL left to
PASSIVE checkpoints alone).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onwatch.core.ingest import timings  # noqa: E402
from tests.support.procs import Running, django, free_port, isolated, wait_http  # noqa: E402

SETUP = """
from onwatch.core.models import Organization
from onwatch.uptime.models import Kind, Monitor
org = Organization.objects.create(name="Bench")
made = Monitor.objects.bulk_create(
    Monitor(org=org, name=f"job {{i}}", kind=Kind.HEARTBEAT, confirmations=1,
            config={{"period": 3600, "grace": 300}})
    for i in range({n})
)
print(json.dumps([str(m.ping_id) for m in Monitor.objects.filter(org=org)]))
"""

COUNT = """
from onwatch.uptime.models import Monitor, Ping, State
print(json.dumps([Ping.objects.count(), Monitor.objects.filter(state=State.UP).count()]))
"""


async def noop(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: an ASGI app that answers OK to everything and does nothing else."""
    if scope["type"] != "http":
        return
    # The request ID echoed, as onwatch does: wrk's script times each ping by it.
    echoed = [(b"x-request-id", v) for k, v in scope["headers"] if k == b"x-request-id"]
    headers = [(b"content-length", b"3"), *echoed]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"OK\n"})


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (uvicorn's workers, if any)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks
    return own + sum(cpu_seconds(int(child)) for child in children)


def tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [p for child in children for p in tree(int(child))]


def pss_mib(pid: int) -> float:
    """Memory of a process and its children, shared pages counted once (PSS), in MiB."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Tally:
    def __init__(self) -> None:
        # Every answered ping's latency, in seconds.
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        # wrk's own p99 (ms), with the samples it adds (WRK_SCRIPT).
        self.wrk_p99: float | None = None
        self.unmatched = 0  # answers wrk read whose ping the script could not tell

    def latency(self, p: float) -> float:
        """The p-th percentile in ms (p = 0.5, 0.99, or 1 for the maximum)."""
        if not self.latencies:
            return float("nan")
        return percentile(self.latencies, p) * 1000 if p < 1 else max(self.latencies) * 1000


async def one_ping(
    host: str, port: int, path: str, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
) -> tuple[int, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
    """Send one GET and read the answer; returns the status and the connection to reuse."""
    keep = conn is not None
    if conn is None:
        conn = await asyncio.open_connection(host, port)
    reader, writer = conn
    close = "" if keep else "Connection: close\r\n"
    # With the port, as curl and wrk send it: the ingest layer learns Django's answer
    # headers per Host, so a warm-up that sent another Host left the load's first pings of
    # each connection to Django, one after another (up to a second each under load).
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench\r\n{close}\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    if keep:
        return status, conn
    writer.close()
    return status, None


async def client(
    host: str, port: int, ids: list[str], until: float, keepalive: bool, tally: Tally
) -> None:
    conn = await asyncio.open_connection(host, port) if keepalive else None
    while time.monotonic() < until:
        path = f"/ping/{random.choice(ids)}"  # noqa: S311  (load, not secrets)
        started = time.perf_counter()
        try:
            status, conn = await one_ping(host, port, path, conn)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.errors += 1
            conn = await asyncio.open_connection(host, port) if keepalive else None
            continue
        tally.latencies.append(time.perf_counter() - started)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1


async def fire(port: int, ids: list[str], seconds: float, concurrency: int, keep: bool) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(client("127.0.0.1", port, ids, until, keep, tally) for _ in range(concurrency))
    )
    return tally


# wrk's own percentiles are not the latencies it measured: before them it "corrects for
# coordinated omission" (stats_correct in its stats.c), adding for every answer slower than
# two intervals (32 connections at 2,500/s: 13 ms) one made-up sample per interval below
# it, as if every connection had waited as long as that one. Here one connection waits
# while hundreds of others are answered, so a few slow answers made its p99 273 ms where
# the same answers captured on the wire (tcpdump) had a p99 of 101. Its histogram cannot
# be read from a script (this wrk's `latency[i]` is broken), so the script times each ping,
# from the moment wrk writes it (`request`, just before wrk starts its own clock) to the
# moment wrk has read the whole answer (`response`), and tells them apart by the
# X-Request-ID the answer echoes.
WRK_SCRIPT = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end
local ids = {%s}
-- Each of wrk's threads runs its own copy of this script; `done` runs in yet another.
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
sent, took, unmatched, n = {}, {}, 0, 0
wrk.headers["User-Agent"] = "bench"
%s
request = function()
  n = n + 1
  local id = string.format("bench-%%09d", n)
  wrk.headers["X-Request-ID"] = id
  sent[id] = now_us()
  return wrk.format("GET", "/ping/" .. ids[math.random(#ids)])
end
response = function(status, headers, body)
  local id = headers["X-Request-ID"] or headers["x-request-id"]
  local at = id and sent[id]
  if at then
    took[#took + 1] = string.format("%%d", now_us() - at)
    sent[id] = nil
  else
    unmatched = unmatched + 1
  end
end
done = function(summary, latency, requests)
  local all, missed = {}, 0
  for _, thread in ipairs(threads) do
    for _, us in ipairs(thread:get("took")) do all[#all + 1] = us end
    missed = missed + thread:get("unmatched")
  end
  io.write(string.format(
    '{"requests": %%d, "bad_status": %%d, "errors": %%d, "unmatched": %%d, '
    .. '"wrk_p99": %%f, "us": [%%s]}\\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, missed, latency:percentile(99) / 1e3,
    table.concat(all, ",")))
end
"""


def fire_wrk(port: int, ids: list[str], seconds: float, concurrency: int, keep: bool) -> Tally:
    """The same load from wrk, a load generator in C: the Python client above needs most
    of a core for itself, which on a 2-core machine is taken from the server measured."""
    close = "" if keep else 'wrk.headers["Connection"] = "close"'
    script = WRK_SCRIPT % (", ".join(f'"{i}"' for i in ids), close)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds:g}s",
                "-s",
                f.name,
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    tally = Tally()
    tally.statuses = {200: found["requests"] - found["bad_status"]}
    if found["bad_status"]:
        tally.statuses[0] = found["bad_status"]  # wrk does not say which codes
    tally.errors = found["errors"]
    tally.latencies = [us / 1e6 for us in found["us"]]
    tally.unmatched = found["unmatched"]
    tally.wrk_p99 = found["wrk_p99"]
    return tally


def load(args: argparse.Namespace, port: int, ids: list[str]) -> Tally:
    if args.client == "wrk":
        return fire_wrk(port, ids, args.seconds, args.concurrency, args.keepalive)
    return asyncio.run(fire(port, ids, args.seconds, args.concurrency, args.keepalive))


class Paced:
    """Pings on a schedule of their own beside the load: one every `every` seconds on a
    new connection, each sent when due whether or not the ones before were answered, as
    cron jobs do. The load's clients send their next ping only once the last was answered,
    so while the server is held up they send few and their figures show little of it;
    these show it all. Each is timed from the moment it was due to its whole answer,
    connecting (and any lateness of this thread) included. A thread of this process with
    its own event loop. Its pings take CPU from the load's, so they are few (50/s by
    default: 1,000 in 20 s, ten beyond the p99)."""

    def __init__(self, port: int, ids: list[str], seconds: float, every: float) -> None:
        self.port, self.ids, self.seconds, self.every = port, ids, seconds, every
        self.tally = Tally()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = []
        for n in range(int(self.seconds / self.every)):
            due = start + n * self.every
            await asyncio.sleep(due - loop.time())
            sent.append(asyncio.create_task(self.one(due)))
        await asyncio.gather(*sent)

    async def one(self, due: float) -> None:
        path = f"/ping/{random.choice(self.ids)}"  # noqa: S311  (load, not secrets)
        try:
            status, _ = await one_ping("127.0.0.1", self.port, path, None)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.tally.errors += 1
            return
        self.tally.latencies.append(asyncio.get_running_loop().time() - due)
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1

    def __enter__(self) -> Paced:
        if self.every > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.thread.join()


class Peak:
    """The largest size a file reached, looked at every 10 ms from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        while not self.done.wait(0.01):
            with suppress(FileNotFoundError):
                self.bytes = max(self.bytes, self.path.stat().st_size)

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def prioritise(pid: int, nice: int) -> None:
    """`nice` alone does not reach `onwatch web`: it runs in a session of its own, and with
    Linux's autogroups a session shares the CPU as one group whatever its processes' nice
    values. So the group's own nice value is set."""
    Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def baseline(args: argparse.Namespace) -> tuple[float, float, float]:
    """Pings/s, p99 (ms) and server CPU per ping (µs) of the do-nothing app under the same
    server and load."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.pings:noop",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        tally = load(args, port, ["x"])
        answered = tally.statuses.get(200, 0)
        rate = answered / (time.monotonic() - started)
        per_ping = (cpu_seconds(server.pid) - cpu_before) / max(answered, 1) * 1e6
        return rate, tally.latency(0.99), per_ping
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--monitors", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keepalive", action="store_true", help="reuse connections")
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (apt install wrk; the default when installed) or Python",
    )
    parser.add_argument(
        "--paced-ms",
        type=float,
        default=20,
        help="beside the load, one ping every this many ms sent when due (0: none)",
    )
    parser.add_argument(
        "--web-workers", type=int, default=2, help="ONWATCH_WEB_WORKERS (onwatch's default: 2)"
    )
    parser.add_argument(
        "--wal-limit-mb",
        type=int,
        default=16,
        help="ONWATCH_SQLITE_WAL_LIMIT_MB (onwatch's default: 16)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        help="run the web processes' scheduling group at this nice value (below 0 needs "
        "root), for figures on a machine shared with other work",
    )
    args = parser.parse_args()

    noop_rate, noop_p99, noop_cpu = baseline(args)
    with (
        tempfile.TemporaryDirectory() as tmp,
        isolated(
            Path(tmp),
            ONWATCH_WEB_WORKERS=str(args.web_workers),
            ONWATCH_INGEST_TIMINGS=str(Path(tmp) / "timings"),
            ONWATCH_SQLITE_WAL_LIMIT_MB=str(args.wal_limit_mb),
        ) as env,
    ):
        ids = json.loads(django(SETUP.format(n=args.monitors), env, migrate=True))
        database = "PostgreSQL" if "DATABASE_URL" in env else "SQLite"
        with Running(["web"], env) as web:
            port = int(env["ONWATCH_PORT"])
            if args.nice is not None:
                prioritise(web.proc.pid, args.nice)
            wait_http(f"http://127.0.0.1:{port}/health/")
            # One ping each first: the first ping of a new heartbeat changes its state (the
            # slow path); the figures are for the steady state of heartbeats that are up.
            asyncio.run(warm(port, ids, args.concurrency))
            cpu_before = cpu_seconds(web.proc.pid)
            memory_before = pss_mib(web.proc.pid)
            stored_before = json.loads(django(COUNT, env))[0]
            Path(env["ONWATCH_INGEST_TIMINGS"]).open("w").close()  # the load's batches only
            started = time.monotonic()
            with (
                Peak(Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3-wal") as wal,
                Paced(port, ids, args.seconds, args.paced_ms / 1000) as paced,
            ):
                tally = load(args, port, ids)
            elapsed = time.monotonic() - started
            server_cpu = cpu_seconds(web.proc.pid) - cpu_before
            memory_after = pss_mib(web.proc.pid)
            spent = timings.read(env["ONWATCH_INGEST_TIMINGS"])
        stored, up = json.loads(django(COUNT, env))
    stored -= stored_before
    accepted = tally.statuses.get(200, 0)
    rate = accepted / elapsed
    p50, p99 = tally.latency(0.5), tally.latency(0.99)
    paced_p99 = paced.tally.latency(0.99) if args.paced_ms > 0 else 0.0
    mode = "keep-alive connections" if args.keepalive else "a new connection per ping"
    print(
        f"database: {database}; {args.web_workers} web process(es); {args.monitors} "
        f"heartbeats; {args.concurrency} clients "
        f"({args.client}), {mode}"
    )
    print(
        f"baseline (do-nothing ASGI app, same server): {noop_rate:.0f}/s, p99 {noop_p99:.1f} ms, "
        f"server CPU {noop_cpu:.0f} µs per answer"
    )
    print(f"answers: {dict(sorted(tally.statuses.items()))}; connection errors: {tally.errors}")
    paced_accepted = paced.tally.statuses.get(200, 0)
    print(
        f"stored pings: {stored} (accepted {accepted}, and {paced_accepted} paced); "
        f"heartbeats up: {up}"
    )
    print(f"accepted: {rate:.0f} pings/s over {elapsed:.1f} s ({rate / noop_rate:.0%} of baseline)")
    latencies(args, tally, paced.tally)
    per_ping = server_cpu / accepted * 1e6 if accepted else float("nan")
    print(f"web process CPU: {server_cpu / elapsed:.0%} of a core, {per_ping:.0f} µs per ping")
    print(
        f"web processes' memory (PSS): {memory_before:.0f} MiB before the load, "
        f"{memory_after:.0f} MiB after"
    )
    # Both p99s: the load's (every ping of it) and the paced pings' (what a ping sent
    # while the server is held up sees). A ping refused or lost is no fast answer either:
    # any answer but 200, or any connection error, and the target is missed.
    refused = sum(n for code, n in tally.statuses.items() if code != 200) + tally.errors
    refused += sum(n for code, n in paced.tally.statuses.items() if code != 200)
    refused += paced.tally.errors
    fast = rate >= 2000 and max(p99, paced_p99) < 50
    verdict = "met" if fast and not refused else "missed"
    if refused:
        verdict += f": {refused} pings refused or lost"
    paced_text = f", paced p99 {paced_p99:.1f} ms" if args.paced_ms > 0 else ""
    print(
        f"summary: {rate:.0f} pings/s accepted, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        f"{paced_text} on {database}; do-nothing baseline {noop_rate:.0f}/s "
        f"(target 2000/s with p99 < 50 ms: {verdict})"
    )
    if database == "SQLite":
        print(
            f"WAL file: largest {wal.bytes / 2**20:.1f} MiB during the load "
            f"(emptied past {args.wal_limit_mb} MiB)"
        )
    where_time_went(spent)
    # wrk stops on the clock with pings in flight: stored, but their answers not counted.
    in_flight = args.concurrency if args.client == "wrk" else 0
    accepted += paced_accepted
    if not accepted <= stored <= accepted + in_flight:
        raise SystemExit(f"the database holds {stored} new pings but {accepted} were accepted")


def latencies(args: argparse.Namespace, load: Tally, paced: Tally) -> None:
    """The load's latencies and the paced pings', each with what it includes."""
    connecting = "connecting not included" if args.client == "wrk" else "connecting included"
    print(
        f"latency of the load's pings (every answered one, from sending it to its whole "
        f"answer; {connecting}): p50 {load.latency(0.5):.1f} ms, p99 {load.latency(0.99):.1f} "
        f"ms, max {load.latency(1):.1f} ms"
    )
    if load.wrk_p99 is not None:
        print(
            f"  wrk's own p99, with the samples it adds for slow answers (WRK_SCRIPT): "
            f"{load.wrk_p99:.1f} ms; answers it read that the script could not time: "
            f"{load.unmatched}"
        )
    if args.paced_ms > 0:
        print(
            f"latency of paced pings (one every {args.paced_ms:g} ms on a new connection, "
            f"sent when due; from then to the whole answer, connecting included): "
            f"{len(paced.latencies)} answered, {paced.errors} connection errors, "
            f"p50 {paced.latency(0.5):.1f} ms, p99 {paced.latency(0.99):.1f} ms, "
            f"max {paced.latency(1):.1f} ms"
        )


def where_time_went(spent: timings.Spent) -> None:
    """The batches' time per stage, and how long their oldest request took in the server,
    apart for batches written while a WAL checkpoint ran."""
    if not spent.batches:
        print("ingest batches: none measured")
        return
    sizes = [size for _, size, _ in spent.batches]
    print(
        f"ingest batches: {len(sizes)}, requests per batch: p50 {percentile(sizes, 0.5):.0f}, "
        f"max {max(sizes)}"
    )
    print("  per batch, ms:  p50    p99     max   (over 20 ms)")
    for stage in timings.STAGES:
        got = spent.stage(stage)
        over = sum(1 for v in got if v > 20)
        print(
            f"  {stage:<12}{percentile(got, 0.5):6.1f} {percentile(got, 0.99):6.1f} "
            f"{max(got):7.1f}   ({over})"
        )
    totals = [sum(spans) for _, _, spans in spent.batches]
    during = spent.during_checkpoint()
    took = [t for _, t, _ in spent.checkpoints]
    if took:
        print(
            f"  WAL checkpoints: {len(took)}, ms: p50 {percentile(took, 0.5):.1f}, "
            f"max {max(took):.1f}"
        )
    for name, which in (("during a checkpoint", True), ("otherwise", False)):
        print(
            f"  oldest request's time in the server, {name}: "
            + histogram([t for t, d in zip(totals, during, strict=True) if d == which])
        )


BUCKETS = (5, 10, 20, 50, 100)  # ms


def histogram(values: list[float]) -> str:
    """How many values fall between the BUCKETS' edges, in words."""
    edges = (0, *BUCKETS, float("inf"))
    counts = [sum(1 for v in values if lo <= v < hi) for lo, hi in itertools.pairwise(edges)]
    names = [
        f"<{BUCKETS[0]}",
        *(f"{lo}-{hi}" for lo, hi in itertools.pairwise(BUCKETS)),
        f"≥{BUCKETS[-1]}",
    ]
    return f"{len(values)} batches, ms " + ", ".join(
        f"{name}: {n}" for name, n in zip(names, counts, strict=True)
    )


async def warm(port: int, ids: list[str], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def once(ping_id: str) -> None:
        async with gate:
            await one_ping("127.0.0.1", port, f"/ping/{ping_id}", None)

    await asyncio.gather(*(once(i) for i in ids))


if __name__ == "__main__":
    main()
