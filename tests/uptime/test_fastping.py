"""The fast route of heartbeat pings (onwatch/uptime/fastping.py, through the ingest layer
of onwatch/core/ingest) against Django's own path.

The comparisons run real uvicorn servers in this process — one serving Django alone, one
serving the fast path in front of it — on the test database, and compare the bytes on
the wire and the rows stored. Concurrency and database failure go through a real
`onwatch web` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from django.core.asgi import get_asgi_application

from onwatch.alerts.models import Incident, IncidentState
from onwatch.core.ingest.app import Ingest
from onwatch.core.ingest.writer import CHECKPOINT_NICE, Writer, failed, timed_out
from onwatch.uptime import fastping, heartbeats, pings
from onwatch.uptime.models import Kind, Monitor, Ping, State
from tests.support.asgi import http, raw, serving, status
from tests.support.child import call
from tests.support.child import uptime as child_uptime
from tests.support.fixtures import make_org
from tests.support.procs import Running, isolated, wait_http

inprocess = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()


def ingest(writer: Writer, wait: float = 30.0) -> Ingest:
    """The ingest layer in front of Django, with the heartbeat route only."""
    return Ingest(django_app, writer, wait, fast=[fastping.ROUTE])


@pytest.fixture
def fast() -> Iterator[Ingest]:
    app = ingest(Writer())
    yield app
    app.writer.stop()  # closes its connection, so the test database can be dropped


def heartbeat(org: Any, name: str) -> Monitor:
    """A heartbeat that is up, as after its first success ping."""
    return Monitor.objects.create(
        org=org,
        name=name,
        kind=Kind.HEARTBEAT,
        confirmations=1,
        config=heartbeats.validate({"period": 3600, "grace": 60}),
        state=State.UP,
    )


def picture(m: Monitor) -> dict[str, Any]:
    """What a ping left behind: its row and the monitor's fields, times relative to the
    ping's own time (the two paths run a moment apart)."""
    m.refresh_from_db()
    ping = Ping.objects.filter(monitor=m).order_by("-id").first()
    assert ping is not None

    def rel(t: datetime | None) -> timedelta | None:
        return t - ping.at if t is not None else None

    row = {f.attname: getattr(ping, f.attname) for f in Ping._meta.concrete_fields}
    for name in ("id", "monitor_id", "at"):
        row.pop(name)
    fields = ("state", "failures", "last_error", "last_latency_ms", "enabled", "alarm_at")
    times = ("last_ping_at", "last_start_at", "last_checked_at", "alarm_at")
    return {
        "ping": row,
        "pings": Ping.objects.filter(monitor=m).count(),
        "monitor": {name: getattr(m, name) for name in fields if name not in times},
        "times": {name: rel(getattr(m, name)) for name in times},
        "changes": m.changes.count(),
    }


FORMS = [
    ("GET", "", b"", ()),
    ("GET", "/", b"", ()),
    ("GET", "/0", b"", ()),
    ("GET", "/0/", b"", ()),
    ("GET", "/start", b"", ()),
    ("GET", "/start/", b"", ()),
    ("GET", "/log", b"", ()),
    ("HEAD", "", b"", ()),
    ("POST", "", b"all done: 42 rows", ("Content-Type: text/plain",)),
    ("POST", "/log", b"caf\xe9 \x00halfway", ()),
    ("POST", "", b"x" * (pings.BODY_KEEP + 300), ()),
    ("GET", "", b"", ("User-Agent: second agent", "X-Forwarded-For: 192.0.2.7")),
]


@inprocess
@pytest.mark.parametrize(("method", "suffix", "body", "headers"), FORMS)
def test_the_fast_path_answers_and_stores_what_django_does(
    fast: Ingest, method: str, suffix: str, body: bytes, headers: tuple[str, ...]
) -> None:
    org = make_org()
    by_django, by_fast, teacher = (heartbeat(org, n) for n in ("a", "b", "c"))
    with serving(django_app) as plain, serving(fast) as front:
        # The first success ping per host goes through Django, which shows the headers.
        assert status(http(front, "GET", f"/ping/{teacher.ping_id}")) == 200
        assert fast.served == 0
        expected = http(plain, method, f"/ping/{by_django.ping_id}{suffix}", body, *headers)
        got = http(front, method, f"/ping/{by_fast.ping_id}{suffix}", body, *headers)
    assert fast.served == 1
    assert got == expected
    assert status(got) == 200
    assert picture(by_fast) == picture(by_django)


@inprocess
def test_an_upper_case_uuid_takes_the_fast_path(fast: Ingest) -> None:
    m = heartbeat(make_org(), "a")
    with serving(fast) as port:
        http(port, "GET", f"/ping/{m.ping_id}")
        answer = http(port, "GET", f"/ping/{str(m.ping_id).upper()}")
    assert (status(answer), fast.served) == (200, 1)
    assert Ping.objects.filter(monitor=m).count() == 2


@inprocess
def test_unusual_pings_are_left_to_django(fast: Ingest) -> None:
    org = make_org()
    up, down = heartbeat(org, "up"), heartbeat(org, "down")
    with serving(fast) as port:
        http(port, "GET", f"/ping/{up.ping_id}")  # teaches the headers
        assert b"not found" in http(port, "GET", f"/ping/{uuid.uuid4()}")
        assert status(http(port, "GET", f"/ping/{up.ping_id}?rid={uuid.uuid4()}")) == 200
        assert status(http(port, "GET", f"/ping/{up.ping_id}", b"", "Cookie: a=b")) == 200
        assert status(http(port, "GET", f"/ping/{up.ping_id}/2")) == 200
        assert b"Unknown ping action" in http(port, "GET", f"/ping/{up.ping_id}/finish")
        assert b"over 102400 bytes" in http(
            port, "POST", f"/ping/{up.ping_id}", b"y" * (pings.BODY_REFUSE + 1)
        )
        assert fast.served == 0
        # A success that brings a heartbeat back up is a state change: Django's too.
        http(port, "GET", f"/ping/{down.ping_id}/fail")
        assert Monitor.objects.get(pk=down.pk).state == State.DOWN
        assert status(http(port, "GET", f"/ping/{down.ping_id}")) == 200
        assert fast.served == 0
    assert Monitor.objects.get(pk=down.pk).state == State.UP
    incident = Incident.objects.get(source=f"uptime.monitor:{down.pk}")
    assert incident.state == IncidentState.RESOLVED
    assert Monitor.objects.get(pk=up.pk).state == State.DOWN  # the /2 above
    assert Ping.objects.filter(monitor=up).count() == 4


@inprocess
def test_a_stalled_database_thread_answers_503_instead_of_hanging() -> None:
    stalled = threading.Event()
    go_on = threading.Event()

    def clock() -> datetime:
        stalled.set()
        go_on.wait(30)  # the writer thread is stuck here, as on a lock that is never freed
        from django.utils import timezone

        return timezone.now()

    m = heartbeat(make_org(), "a")
    app = ingest(Writer(clock=clock), wait=0.5)
    try:
        with serving(app) as port:
            http(port, "GET", f"/ping/{m.ping_id}")
            started = time.monotonic()
            answer = http(port, "GET", f"/ping/{m.ping_id}")
            assert time.monotonic() - started < 5
            assert status(answer) == 503
            assert answer.endswith(timed_out(0.5, "ping").encode() + b"\n")
            assert stalled.is_set()
            go_on.set()
            # Once free, the thread finishes the ping it held (stop waits for that).
            app.writer.stop()
            assert Ping.objects.filter(monitor=m).count() == 2
            # The next ping starts a new thread.
            assert status(http(port, "GET", f"/ping/{m.ping_id}")) == 200
            assert Ping.objects.filter(monitor=m).count() == 3
    finally:
        go_on.set()
        app.writer.stop()


# A real `onwatch web`


async def ping_all(port: int, paths: list[str], concurrency: int) -> list[int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> int:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return int(head.split(b" ", 2)[1])

    return list(await asyncio.gather(*(one(p) for p in paths)))


class Web(NamedTuple):
    env: dict[str, str]
    ids: list[str]  # heartbeats, up
    process: Running


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One `onwatch web` for the tests below (starting one takes seconds), with heartbeats
    that the first pings have brought up, and the answer headers learned."""
    with isolated(tmp_path_factory.mktemp("web"), migrated=True) as env:
        yield from started(env)


def started(env: dict[str, str]) -> Iterator[Web]:
    ids = json.loads(call(child_uptime.add_heartbeats, env, 41, migrate=True))
    with Running(["web"], env) as running:
        port = int(env["ONWATCH_PORT"])
        wait_http(f"http://127.0.0.1:{port}/health/")
        assert set(asyncio.run(ping_all(port, [f"/ping/{i}" for i in ids], 41))) == {200}
        running.wait_for("are now taken ahead of Django")
        yield Web(env, ids, running)


@pytest.fixture
def unlimited(tmp_path: Path) -> Iterator[Web]:
    """`onwatch web` as above, without a rate limit a load from one client would reach."""
    with isolated(tmp_path, migrated=True, ONWATCH_PING_RATE_LIMIT="1000000") as env:
        if "DATABASE_URL" in env:
            pytest.skip("SQLite's WAL")
        yield from started(env)


def counts(env: dict[str, str]) -> tuple[dict[str, int], int]:
    per, up = json.loads(call(child_uptime.print_ping_counts, env))
    return per, up


def test_many_pings_at_once_through_onwatch_web_are_all_stored(
    web: Web,
) -> None:
    env, ids = web.env, web.ids[:40]
    port = int(env["ONWATCH_PORT"])
    paths = [f"/ping/{ids[n % len(ids)]}" for n in range(1200)]
    assert set(asyncio.run(ping_all(port, paths, 100))) == {200}
    per, up = counts(env)
    assert up == len(ids) + 1
    assert {i: per[i] for i in ids} == dict.fromkeys(ids, 1 + 1200 // len(ids))
    if "DATABASE_URL" not in env:
        # The writer never checkpoints inside a ping's transaction; a thread beside it
        # copies the WAL into the database file within a second or so.
        db = Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
        deadline = time.monotonic() + 10
        while (in_file := pings_in_file(db)) < sum(per.values()):
            assert time.monotonic() < deadline, f"{in_file} pings in the database file"
            time.sleep(0.2)


def pings_in_file(db: Path) -> int:
    """Pings in the database file itself, not counting what waits in its WAL."""
    with closing(sqlite3.connect(f"file:{db}?immutable=1", uri=True)) as c:
        found: int = c.execute("SELECT count(*) FROM uptime_ping").fetchone()[0]
        return found


def rename(env: dict[str, str], table: str, to: str) -> None:
    """A real failure for every statement that names the table (straight to the database:
    a helper process would take seconds to start)."""
    statement = f"ALTER TABLE {table} RENAME TO {to}"
    if "DATABASE_URL" in env:
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as pg:
            pg.execute(statement)
        return
    with closing(sqlite3.connect(Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3")) as db:
        db.execute(statement)


def test_a_database_failure_is_answered_503_with_a_reason(
    web: Web,
) -> None:
    env, code, port = web.env, web.ids[40], int(web.env["ONWATCH_PORT"])
    rename(env, "uptime_ping", "gone")
    try:
        started = time.monotonic()
        answer = http(port, "GET", f"/ping/{code}")
        assert time.monotonic() - started < 10
    finally:
        rename(env, "gone", "uptime_ping")
    assert status(answer) == 503
    assert answer.endswith(failed("ping").encode() + b"\n")
    assert status(http(port, "GET", f"/ping/{code}")) == 200
    web.process.wait_for("could not be stored")  # with the reason, for whoever runs onwatch
    per, _ = counts(env)
    assert per[code] == 2


def test_a_ping_is_stored_the_moment_another_writer_lets_go_of_the_database(
    web: Web,
) -> None:
    """Another process's write (a page, the worker) holds SQLite's write lock a while.
    SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between tries, so after the first
    quarter second it tries again only every 100 ms: with the lock let go at five points
    spread over those 100 ms, half the pings waited 40 ms or more after it was free."""
    if "DATABASE_URL" in web.env:
        pytest.skip("SQLite's write lock")
    waits = [held_then_pinged(web, seconds) for seconds in (0.35, 0.37, 0.39, 0.41, 0.43)]
    assert sorted(waits)[2] < 0.025, [f"{w * 1000:.0f} ms" for w in waits]


def held_then_pinged(web: Web, seconds: float) -> float:
    """How long after the lock was free, held `seconds` by another connection, the ping
    was answered."""
    code, port = web.ids[40], int(web.env["ONWATCH_PORT"])
    db = Path(web.env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
    with (
        closing(sqlite3.connect(db, isolation_level=None)) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        other.execute("BEGIN IMMEDIATE")
        ping = pool.submit(raw, port, "GET", f"/ping/{code}")
        time.sleep(seconds)
        assert not ping.done()  # it waits for the lock
        other.execute("COMMIT")
        released = time.monotonic()
        answer = ping.result(10)
        waited = time.monotonic() - released
    assert status(answer) == 200
    return waited


def test_the_wal_checkpoint_runs_below_the_threads_that_answer(web: Web) -> None:
    """Copying the WAL into the database took the CPU from the writer and the event loop:
    batches written meanwhile were far more often slow."""
    if "DATABASE_URL" in web.env:
        pytest.skip("SQLite's WAL")
    port = int(web.env["ONWATCH_PORT"])
    # Both web processes write a batch, which starts their checkpoint thread.
    assert set(asyncio.run(ping_all(port, [f"/ping/{web.ids[0]}"] * 50, 20))) == {200}
    lowered = [
        nice(pid, tid)
        for pid in children(web.process.proc.pid)
        for tid in os.listdir(f"/proc/{pid}/task")
        if nice(pid, tid) != 0
    ]
    assert lowered and set(lowered) == {CHECKPOINT_NICE}
    assert len(lowered) <= len(children(web.process.proc.pid))  # one thread per process


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def nice(pid: int, tid: str) -> int:
    """A thread's nice value (the 19th field of its stat, after the name in brackets)."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


# Under this, whatever the rate: the WAL is emptied once it passes its limit (16 MiB by
# default), and it grows by a few MB between two looks of the checkpoint thread.
WAL_BOUND = 48 * 2**20


def test_the_wal_stays_bounded_under_sustained_pings_while_a_reader_polls(
    unlimited: Web,
) -> None:
    """A PASSIVE checkpoint never catches up with a writer that keeps writing, and SQLite
    starts the WAL over only after one that did: it grew by some 25 MB a second, for as
    long as the pings kept coming."""
    web = unlimited
    port = int(web.env["ONWATCH_PORT"])
    db = Path(web.env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
    wal = db.with_name(db.name + "-wal")
    stop = threading.Event()
    read = 0

    def poll() -> None:  # a page reading the pings meanwhile, as the dashboard does
        nonlocal read
        with closing(sqlite3.connect(db, isolation_level=None)) as reader:
            while not stop.wait(0.05):
                reader.execute("SELECT max(id) FROM uptime_ping").fetchone()
                read += 1

    def load() -> list[int]:
        paths = [f"/ping/{web.ids[n % 40]}" for n in range(400)]
        answers: list[int] = []
        while not stop.is_set():
            answers += asyncio.run(ping_all(port, paths, 32))
        return answers

    peak = 0
    with ThreadPoolExecutor(2) as pool:
        reading, pinging = pool.submit(poll), pool.submit(load)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peak = max(peak, wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.01)
        stop.set()
        answers, _ = pinging.result(30), reading.result(30)
    assert set(answers) == {200} and read > 20
    mib = f"{peak / 2**20:.1f} MiB after {len(answers)} pings"
    # Enough pings that an unbounded WAL would pass the bound several times over.
    assert len(answers) * 19 * 4096 > 2 * WAL_BOUND, mib
    assert peak < WAL_BOUND, mib
