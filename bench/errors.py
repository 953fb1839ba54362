"""Error intake: onwatch beside Bugsink, the same SDK events to both in the same run.

    .venv/bin/python bench/errors.py [--events 2000] [--large 200] [--issues 300]
                                     [--concurrency 16] [--no-bugsink]

Events are built by the real sentry-sdk in this process (a transport of our own keeps its
envelopes instead of sending them): exceptions raised through stacks of 9 to 12 frames,
each with local variables, and breadcrumbs; one in-app path per issue, so `--issues`
distinct issues. `--events` events of about 8 KB and `--large` of about 50 KB, gzipped
as the SDK sends them.

Then a load generator (aiohttp, `--concurrency` clients on keep-alive connections, as
SDKs keep theirs) sends them as envelopes to a real `onwatch web` on a data directory of
its own (SQLite, or a fresh PostgreSQL database when DATABASE_URL is set, as the tests
do), and the same envelopes to Bugsink from PyPI: installed by uv into a venv under a
temp dir, configured by its own `bugsink-create-conf --template=singleserver`, run as its
docs say (gunicorn and its snappea digester, its own SQLite).

Both are told to take the whole load: onwatch's per-project rate limit
(ONWATCH_ERRORS_RATE_LIMIT) and hourly quota, and Bugsink's quotas (which, past them,
answer 200 and drop), are raised above it; everything else is each one's default.

A last set of 8 KB events is sent at a steady `--rate` (100/s by default, for
`--paced-seconds`): answer times under a load the server keeps up with, where the sets
before show them at its limit (16 clients waiting on a server that digests 200/s wait
~80 ms each, whatever it does).

Prints, per server and event size: events accepted per second (answered 2xx, from the
first send to the last answer), events digested per second end to end (from the first
send until the database holds the last accepted event, grouped into its issue — each
database is polled) and, for onwatch, the depth of its queue of envelopes answered and
not yet digested over the run, p50/p99 answer time, peak memory (PSS of all its processes), idle
memory, events lost (answered 2xx, never stored) and refused; and onwatch/Bugsink for
the digest rate. The load average is printed too: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pings import cpu_seconds, pss_mib  # noqa: E402
from onwatch.core.ingest import spool  # noqa: E402
from tests.support.procs import Running, django, free_port, isolated, wait_http  # noqa: E402

KB = 1024
PACED = "8 KB paced"  # the set sent at --rate, for answer times under a steady load
BASE_PYTHON: str = getattr(sys, "_base_executable", sys.executable)  # the venv's own Python
SETUP = """
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.errors import services
project = services.add_project(Organization.objects.create(name="Bench"), "shop", SYSTEM)
project.hourly_quota = 10**9  # the bench's load is wanted, not a flood to refuse
project.save()
print(json.dumps([project.pk, project.public_key]))
"""
BUGSINK_SETUP = """
from projects.models import Project
from teams.models import Team
project = Project.objects.create(name="shop", team=Team.objects.create(name="bench"))
print(project.id, project.sentry_key.hex)
"""
BUGSINK_SITE = """
BUGSINK["BASE_URL"] = "http://127.0.0.1:{port}"
ALLOWED_HOSTS = ["127.0.0.1"]
"""
# Bugsink's quotas (MAX_EVENTS_*: 1,000 per 5 minutes by default) answer 200 and drop
# what is over them: raised, so that its digest rate is measured, not its quota
# (--bugsink-quotas=default shows the drops).
BUGSINK_QUOTAS = """
for _per in ("PER_PROJECT_PER_5_MINUTES", "PER_PROJECT_PER_HOUR", "PER_5_MINUTES", "PER_HOUR"):
    BUGSINK["MAX_EVENTS_" + _per] = 10**9
"""


# --- events, built by the real SDK --------------------------------------------------------


class Keep(Transport):
    """The SDK's transport, keeping each envelope's bytes instead of sending them."""

    kept: list[bytes] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        Keep.kept.append(envelope.serialize())


LAYERS = ["cart", "pricing", "stock", "payment", "shipping", "invoice", "mailer", "loyalty"]


def _layer(name: str) -> Callable[[list[int], dict[str, Any]], None]:
    def step(path: list[int], order: dict[str, Any]) -> None:
        """One frame per step of `path`, each in a function named after a layer: the
        in-app frames differ per path, so each path is an issue of its own."""
        note = f"{name} checked {len(order['lines'])} lines"  # a local the SDK sends
        if not path:
            total = sum(line["price"] * line["qty"] for line in order["lines"])
            raise ValueError(f"order {order['id']} of {total} could not be paid: {note}")
        STEPS[path[0]](path[1:], order)

    # The SDK names a frame by its code object: each layer gets one of its own.
    code_name = f"check_{name}"
    step.__code__ = step.__code__.replace(co_name=code_name, co_qualname=code_name)
    step.__name__ = step.__qualname__ = code_name
    return step


STEPS = [_layer(name) for name in LAYERS]


def handle_request(issue: int, n: int, padding: int) -> None:
    path = [issue // 64 % 8, issue // 8 % 8, issue % 8]
    order = {
        "id": n,
        "customer": f"customer-{n % 997}",
        "lines": [{"sku": f"SKU-{n + i}", "price": 9.5 + i, "qty": 1 + i % 3} for i in range(2)],
    }
    response = "x" * padding  # what the payment provider answered: a local of this frame only  # noqa: F841
    view_checkout(path, order)


def view_checkout(path: list[int], order: dict[str, Any]) -> None:
    session = {"user": order["customer"], "basket": len(order["lines"])}  # noqa: F841
    STEPS[path[0]](path[1:], order)


def crumbs(n: int, count: int) -> None:
    for i in range(count):
        kind = i % 3
        if kind == 0:
            sentry_sdk.add_breadcrumb(
                category="httplib",
                type="http",
                data={"url": f"https://api.example/stock/{n + i}", "method": "GET", "code": 200},
            )
        elif kind == 1:
            query = f"SELECT id, sku, price FROM line WHERE order_id = {n} AND n > {i}"  # noqa: S608  (a breadcrumb's text)
            sentry_sdk.add_breadcrumb(category="query", message=query)
        else:
            sentry_sdk.add_breadcrumb(
                category="shop.checkout", message=f"step {i} of order {n} done", level="info"
            )


def capture(issue: int, n: int, breadcrumbs: int, padding: int) -> None:
    with sentry_sdk.isolation_scope() as scope:  # where breadcrumbs are kept
        scope.set_user({"id": f"u-{n % 500}", "email": f"user{n % 500}@example.com"})
        scope.set_tag("shop.region", ["eu", "us", "ap"][n % 3])
        crumbs(n, breadcrumbs)
        try:
            handle_request(issue, n, padding)
        except ValueError:
            sentry_sdk.capture_exception()


def event_size(envelope: bytes) -> int:
    """Bytes of the event item's payload (the envelope's third line)."""
    return len(envelope.split(b"\n")[2])


def build(count: int, issues: int, size: int, first: int) -> list[bytes]:
    """`count` envelopes with events of about `size` bytes, `issues` distinct issues."""
    breadcrumbs = 10 if size < 20 * KB else 100
    Keep.kept.clear()
    capture(0, first, breadcrumbs, 0)
    padding = max(0, size - event_size(Keep.kept[0]))
    Keep.kept.clear()
    for n in range(first, first + count):
        capture(n % issues, n, breadcrumbs, padding)
    sentry_sdk.flush()
    return list(Keep.kept)


def make_events(args: argparse.Namespace) -> dict[str, list[bytes]]:
    sentry_sdk.init(
        "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1",
        transport=Keep,
        release="shop@1.4.2",
        environment="production",
        include_local_variables=True,
        in_app_include=[__name__],
        default_integrations=False,
        max_breadcrumbs=100,
    )
    # Each set its own events: one sent again would be a retry, stored once.
    return {
        "8 KB": build(args.events, args.issues, 8 * KB, 0),
        "50 KB": build(args.large, args.issues, 50 * KB, args.events),
        PACED: build(round(args.rate * args.paced_seconds), args.issues, 8 * KB, 10**6),
    }


# --- load -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str  # the envelope endpoint
    key: str
    database: str
    count: Callable[[], int]  # events stored, read from its database
    issues: Callable[[], int]  # issues they were grouped into
    roots: Callable[[], list[int]]  # the processes it started, whose children are its own
    # What was answered and not yet digested, in `queue_unit`s (None: not known).
    queued: Callable[[], int] | None = None
    queue_unit: str = "envelopes"


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    last_answer: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


async def send(target: Target, bodies: list[bytes], concurrency: int, rate: float) -> Load:
    """Each client sends its next event when the last one was answered; with a `rate`,
    not before that event's time in an even schedule of `rate` events a second."""
    load = Load()
    pending = iter(enumerate(bodies))
    loop = asyncio.get_running_loop()
    start = loop.time()
    headers = {
        "Content-Type": "application/x-sentry-envelope",
        "Content-Encoding": "gzip",
        "X-Sentry-Auth": f"Sentry sentry_key={target.key}, sentry_version=7, "
        f"sentry_client=sentry.python/{sentry_sdk.VERSION}",
    }

    async def client(session: aiohttp.ClientSession) -> None:
        for n, body in pending:
            if rate:
                await asyncio.sleep(start + n / rate - loop.time())
            started = time.perf_counter()
            try:
                async with session.post(target.url, data=body, headers=headers) as answer:
                    await answer.read()
            except aiohttp.ClientError:
                load.errors += 1
                continue
            load.latencies.append(time.perf_counter() - started)
            load.statuses[answer.status] = load.statuses.get(answer.status, 0) + 1
            load.last_answer = time.monotonic()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return load


class QueueDepth:
    """The depth of a target's queue (answered, not yet digested), every 0.5 s in a thread."""

    def __init__(self, queued: Callable[[], int] | None, unit: str = "envelopes") -> None:
        self.queued = queued
        self.unit = unit
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        assert self.queued is not None
        started = time.monotonic()
        while not self._stop.wait(0.5):
            self.samples.append((time.monotonic() - started, self.queued()))

    def __enter__(self) -> QueueDepth:
        if self.queued is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.queued is not None:
            self._thread.join()

    def line(self) -> str:
        """Every second's depth at most 20 times over the run."""
        step = max(1, len(self.samples) // 20)
        shown = ", ".join(f"{t:.1f}s {n}" for t, n in self.samples[::step])
        return f"queue depth ({self.unit} answered, not yet digested): {shown or 'none sampled'}"


class PeakMemory:
    """The highest PSS of a target's processes, sampled every 0.2 s in a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, memory(self.pids()))
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, memory(self.pids()))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, memory(self.pids()))  # a load shorter than one sample


def memory(roots: list[int]) -> float:
    """PSS (MiB) of the processes and their children: each shared page counted once."""
    return sum(pss_mib(pid) for pid in roots)


@dataclass
class Figures:
    target: str
    size: str
    sent: int
    load: Load
    seconds_to_answer: float
    stored: int
    seconds_to_store: float
    peak_mib: float
    server_cpu: float  # seconds, all its processes, from the first send to the last stored
    own_cpu: float  # seconds of this process (the load generator) meanwhile
    depth: QueueDepth | None = None

    @property
    def accept_rate(self) -> float:
        return self.load.accepted / self.seconds_to_answer

    @property
    def digest_rate(self) -> float:
        return self.stored / self.seconds_to_store

    @property
    def lost(self) -> int:
        return max(0, self.load.accepted - self.stored)

    @property
    def refused(self) -> int:
        return self.sent - self.load.accepted

    def line(self) -> str:
        p50 = percentile(self.load.latencies, 0.5)
        p99 = percentile(self.load.latencies, 0.99)
        other = {s: n for s, n in self.load.statuses.items() if not 200 <= s < 300}
        refusals = f" {other}" if other else ""
        errors = f", {self.load.errors} connection errors" if self.load.errors else ""
        return (
            f"{self.target:8} {self.size:10} accepted {self.accept_rate:6.0f}/s, "
            f"digested {self.digest_rate:6.1f}/s, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, "
            f"peak {self.peak_mib:5.0f} MiB, lost {self.lost}, "
            f"refused {self.refused}{refusals}{errors}; CPU per event: server "
            f"{self.server_cpu / max(self.stored, 1) * 1e3:.1f} ms, "
            f"load generator {self.own_cpu / max(self.sent, 1) * 1e3:.1f} ms"
        )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0


def measure(target: Target, size: str, bodies: list[bytes], args: argparse.Namespace) -> Figures:
    rate = args.rate if size == PACED else 0
    before = target.count()
    with PeakMemory(target.roots) as peak, QueueDepth(target.queued, target.queue_unit) as depth:
        cpu = server_cpu(target), time.process_time()
        started = time.monotonic()
        load = asyncio.run(send(target, bodies, args.concurrency, rate))
        answered = load.last_answer - started if load.last_answer else float("nan")
        stored, at = wait_stored(target, before + load.accepted, args.patience)
        used = server_cpu(target) - cpu[0], time.process_time() - cpu[1]
    return Figures(
        target.name, size, len(bodies), load, answered, stored - before, at - started,
        peak.peak, *used, depth,
    )  # fmt: skip


def server_cpu(target: Target) -> float:
    return sum(cpu_seconds(pid) for pid in target.roots())


def wait_stored(target: Target, wanted: int, patience: float) -> tuple[int, float]:
    """Polls the database until it holds `wanted` events, or until `patience` seconds
    pass without one more: (events stored, when the last one was seen)."""
    stored, seen = target.count(), time.monotonic()
    while stored < wanted and time.monotonic() - seen < patience:
        time.sleep(0.05)
        now = target.count()
        if now != stored:
            stored, seen = now, time.monotonic()
    return stored, seen


# --- the two servers ------------------------------------------------------------------------


def sqlite_count(path: Path, table: str) -> Callable[[], int]:
    def count() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            found: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        return found

    return count


def postgres_count(url: str, table: str) -> Callable[[], int]:
    import psycopg

    def count() -> int:
        with psycopg.connect(url) as db:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    return count


def counter_rows(url: str | None, db: Path) -> Callable[[], list[tuple[str, int]]]:
    """The digest's cursors in the spool files (errors_spoolcursor), read from its database."""
    sql = 'SELECT name, "offset" FROM errors_spoolcursor'

    def rows() -> list[tuple[str, int]]:
        if url:
            import psycopg

            with psycopg.connect(url) as pg:
                return [(str(n), int(o)) for n, o in pg.execute(sql).fetchall()]
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as lite:
            return [(str(n), int(o)) for n, o in lite.execute(sql).fetchall()]

    return rows


def spooled_kib(data: Path, cursors: Callable[[], list[tuple[str, int]]]) -> int:
    """KiB of onwatch's error spool answered and not yet digested."""
    folder = data / "spool" / "errors"
    at = dict(cursors())
    return sum(max(0, spool.size(folder / n) - at.get(n, 0)) for n in spool.files(folder)) // 1024


@contextmanager
def onwatch(tmp: Path, web_workers: int) -> Iterator[Target]:
    # The whole bench load comes from one project; the per-project rate limit is there
    # against a flood, which this is not.
    extra = {"ONWATCH_ERRORS_RATE_LIMIT": "1000000", "ONWATCH_WEB_WORKERS": str(web_workers)}
    with isolated(tmp, **extra) as env:
        project, key = json.loads(django(SETUP, env, migrate=True))
        url = env.get("DATABASE_URL")
        db = Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
        counter = partial(postgres_count, url) if url else partial(sqlite_count, db)
        with Running(["web"], env) as web:
            port = int(env["ONWATCH_PORT"])
            wait_http(f"http://127.0.0.1:{port}/health/")
            yield Target(
                "onwatch",
                f"http://127.0.0.1:{port}/api/{project}/envelope/",
                key,
                "PostgreSQL" if url else "SQLite",
                counter("errors_event"),
                counter("errors_issue"),
                lambda: [web.proc.pid],
                partial(spooled_kib, Path(env["ONWATCH_DATA_DIR"]), counter_rows(url, db)),
                "KiB of spool",
            )


def bugsink_venv(base: Path) -> Path:
    """Bugsink's newest release from PyPI, in a venv of its own: made by uv when there is
    one (its cache makes the next run quick), else by venv and pip."""
    venv = base / "venv"
    python = str(venv / "bin" / "python")
    if uv := uv_command():
        # Given the interpreter: uv left to find one downloads a Python where none is its
        # own (and fails offline, as here).
        subprocess.run([*uv, "venv", "-q", "--python", BASE_PYTHON, str(venv)], check=True)
        subprocess.run([*uv, "pip", "install", "-q", "--python", python, "bugsink"], check=True)
    else:
        subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "bugsink"], check=True)
    return venv / "bin"


def uv_command() -> list[str]:
    """uv on PATH, or the uv module of the Python this venv was made from (as
    scripts/python-env.sh finds it)."""
    if found := shutil.which("uv"):
        return [found]
    base = BASE_PYTHON
    has_uv = subprocess.run([base, "-c", "import uv"], capture_output=True).returncode == 0
    return [base, "-m", "uv"] if has_uv else []


@contextmanager
def bugsink(tmp: Path, workers: int, raise_quotas: bool) -> Iterator[Target]:
    bin_dir = bugsink_venv(tmp)
    port = free_port()
    conf = tmp / "bugsink_conf.py"
    subprocess.run(
        [bin_dir / "bugsink-create-conf", "--template=singleserver", "--port", str(port),
         "--host", "127.0.0.1", "--base-dir", str(tmp), "-o", str(conf)],
        check=True, capture_output=True,
    )  # fmt: skip
    quotas = BUGSINK_QUOTAS if raise_quotas else ""
    conf.write_text(conf.read_text() + BUGSINK_SITE.format(port=port) + quotas)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bugsink_conf", "PYTHONPATH": str(tmp)}
    env.pop("DATABASE_URL", None)  # its own SQLite

    def manage(*args: str) -> str:
        done = subprocess.run(
            [bin_dir / "bugsink-manage", *args], env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"bugsink-manage {args[0]} failed:\n{done.stderr}")
        return done.stdout

    manage("migrate")
    manage("migrate", "snappea", "--database=snappea")
    # Its shell says first how many objects it imported: the answer is the last line.
    project, key = manage("shell", "-c", BUGSINK_SETUP).split()[-2:]
    web = subprocess.Popen(
        [bin_dir / "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--log-level", "warning", "bugsink.wsgi"],
        env=env, cwd=tmp, start_new_session=True,
        # A warning per refusal (429) otherwise: kept out of the figures.
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    digester = subprocess.Popen(
        [bin_dir / "bugsink-runsnappea"], env=env, cwd=tmp, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Its start-up (gunicorn's workers importing Django) took over 30 s on this machine
        # under a load of 13: that is not what the bench measures.
        wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=180)
        yield Target(
            "Bugsink",
            f"http://127.0.0.1:{port}/api/{project}/envelope/",
            key,
            "SQLite",
            sqlite_count(tmp / "db.sqlite3", "events_event"),
            sqlite_count(tmp / "db.sqlite3", "issues_issue"),
            lambda: [web.pid, digester.pid],
        )
    finally:
        for proc in (web, digester):
            proc.terminate()
            proc.wait(timeout=30)


# --- the run --------------------------------------------------------------------------------


def run_target(
    target: Target, events: dict[str, list[bytes]], args: argparse.Namespace
) -> tuple[list[Figures], float, float]:
    """Figures per event size, and idle memory (MiB) before and after the load."""
    time.sleep(1)  # start-up settled
    idle_before = memory(target.roots())
    figures = [measure(target, size, bodies, args) for size, bodies in events.items() if bodies]
    time.sleep(1)
    return figures, idle_before, memory(target.roots())


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events of about 8 KB")
    parser.add_argument("--large", type=int, default=200, help="events of about 50 KB")
    parser.add_argument("--issues", type=int, default=300, help="distinct issues (≤ 512)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once")
    parser.add_argument("--web-workers", type=int, default=2, help="ONWATCH_WEB_WORKERS")
    parser.add_argument(
        "--bugsink-workers", type=int, default=4, help="gunicorn workers of Bugsink"
    )
    parser.add_argument(
        "--patience", type=float, default=30, help="seconds without a new event stored that "
        "end the wait for the rest (what is still missing then is lost)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=100,
        help="events a second of a last, paced load of 8 KB events (0: none)",
    )  # fmt: skip
    parser.add_argument("--paced-seconds", type=float, default=5, help="how long it lasts")
    parser.add_argument(
        "--bugsink-quotas", choices=["raised", "default"], default="raised",
        help="Bugsink's event quotas: raised above the load, or its own (which drop events)",
    )  # fmt: skip
    parser.add_argument("--no-bugsink", action="store_true", help="onwatch alone")
    args = parser.parse_args()
    if not 1 <= args.issues <= 512:
        parser.error("--issues must be between 1 and 512")
    if args.events < 1 or args.concurrency < 1:
        parser.error("--events and --concurrency must be at least 1")
    if min(args.large, args.rate, args.paced_seconds) < 0:
        parser.error("--large, --rate and --paced-seconds cannot be negative")

    events = make_events(args)
    sizes = {
        size: statistics.median(map(event_size, bodies))
        for size, bodies in events.items()
        if bodies
    }
    gzipped = {size: [gzip.compress(b) for b in bodies] for size, bodies in events.items()}
    print(f"load average before: {load_average()}")
    print(
        f"events: {args.events} of ~{sizes.get('8 KB', 0) / KB:.1f} KB and {args.large} of "
        f"~{sizes.get('50 KB', 0) / KB:.1f} KB (median), {args.issues} issues, built by "
        f"sentry-sdk {sentry_sdk.VERSION}; {args.concurrency} keep-alive clients, as fast "
        f"as answered; then {len(events[PACED])} more 8 KB events at {args.rate:g}/s (paced)"
    )
    results: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with onwatch(Path(tmp) / "onwatch", args.web_workers) as target:
            results["onwatch"], idle, after = run_target(target, gzipped, args)
            print(
                f"onwatch ({target.database}, {args.web_workers} web processes): idle memory "
                f"{idle:.0f} MiB, {after:.0f} MiB after the load; {target.issues()} issues"
            )
        if not args.no_bugsink:
            (Path(tmp) / "bugsink").mkdir()
            quotas = args.bugsink_quotas == "raised"
            with bugsink(Path(tmp) / "bugsink", args.bugsink_workers, quotas) as target:
                results["Bugsink"], idle, after = run_target(target, gzipped, args)
                print(
                    f"Bugsink (SQLite, {args.bugsink_workers} gunicorn workers and snappea, "
                    f"quotas {args.bugsink_quotas}): "
                    f"idle memory {idle:.0f} MiB, {after:.0f} MiB after the load; "
                    f"{target.issues()} issues"
                )
    for figures in results.values():
        for f in figures:
            print(f.line())
            if f.depth is not None and f.depth.queued is not None:
                print(f"    {f.depth.line()}")
    report(results, args)
    print(f"load average after: {load_average()}")
    lost = sum(f.lost for f in results["onwatch"])
    if lost:
        raise SystemExit(f"onwatch answered 2xx to {lost} events it did not store")


def report(results: dict[str, list[Figures]], args: argparse.Namespace) -> None:
    ours = results["onwatch"][0]
    p99 = percentile(ours.load.latencies, 0.99)
    verdicts = [
        f"accept {ours.accept_rate:.0f}/s (≥ 1000)",
        f"digest {ours.digest_rate:.0f}/s (≥ 300)",
        f"p99 {p99:.1f} ms (< 50)",
        f"lost {sum(f.lost for f in results['onwatch'])} (0)",
    ]
    paced = [f for f in results["onwatch"] if f.size == PACED]
    if paced:
        verdicts.append(
            f"p99 at {args.rate:g}/s {percentile(paced[0].load.latencies, 0.99):.1f} ms"
        )
    if "Bugsink" in results:
        theirs = results["Bugsink"][0]
        ratio = ours.digest_rate / theirs.digest_rate if theirs.digest_rate else float("inf")
        verdicts.append(f"digest onwatch/Bugsink {ratio:.1f}× (≥ 6)")
    print("summary, 8 KB events: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
