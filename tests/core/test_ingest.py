"""The ingest layer (onwatch/core/ingest): fast routes ahead of Django, one writer.

Real uvicorn servers in this process serve the layer in front of Django on the test
database; a test-only model and route stand in for the next ingest (error events).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.core.asgi import get_asgi_application
from django.db import connection, models
from django.test import Client
from django.test.utils import isolate_apps

from onwatch.core.ingest import Accepted, Answer, Route, timings, writer
from onwatch.core.ingest.app import Ingest
from onwatch.core.ingest.limits import Limit
from onwatch.core.ingest.request import Request
from onwatch.core.ingest.store import Store
from onwatch.core.ingest.writer import (
    CHECKPOINT_SECONDS,
    SWITCH_SECONDS,
    Job,
    Writer,
    checkpoint,
    checkpoints,
    truncate,
)
from onwatch.uptime import fastping, heartbeats
from onwatch.uptime.models import Kind, Monitor, Ping, State
from tests.support.asgi import header, header_names, raw, serving, status
from tests.support.fixtures import make_org

inprocess = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()

with isolate_apps("onwatch.core"):

    class Event(models.Model):
        """A test-only table: `source` stands for a column added after the route was
        written, NOT NULL with a default only the model knows."""

        key = models.CharField(max_length=40)
        at = models.DateTimeField()
        source = models.CharField(max_length=20, default="added later")
        objects: ClassVar[models.Manager[Event]] = models.Manager()

        class Meta:
            app_label = "core"
            db_table = "test_ingest_event"


EVENT_PATH = re.compile(r"/health/event/([a-z0-9]+)")
writers: list[threading.Thread] = []  # the threads the test route's rows were written in


def accept_event(request: Request, body: bytes) -> Accepted | None:
    found = EVENT_PATH.fullmatch(request.path)
    return Accepted(found.group(1), found.group(1)) if found else None


def write_event(store: Store, key: str, now: datetime) -> Answer | None:
    writers.append(threading.current_thread())
    store.add(Event(key=key, at=now))  # `source` is never named here
    return Answer(200, b"stored\n")


# Django's /health/ answers "ok": its headers are the ones this route's answers reuse.
EVENTS = Route(
    name="test events",
    noun="event",
    prefix="/health/",
    accept=accept_event,
    write=write_event,
    limit=Limit(lambda: 1000.0),
    teach=b"ok",
)


@pytest.fixture
def event_table() -> Iterator[None]:
    with connection.schema_editor() as editor:
        editor.create_model(Event)
    yield
    with connection.schema_editor() as editor:
        editor.delete_model(Event)


class Recording(Writer):
    """A writer that notes which routes each batch held, and can be held at its clock."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()

    def write(self, batch: list[Job], again: bool = True) -> list[Answer | None]:
        self.batches.append([job.route.name for job in batch])
        self.holding.set()
        self.hold.wait(30)
        return super().write(batch, again)


@pytest.fixture
def app() -> Iterator[Ingest]:
    made = Ingest(django_app, Recording(), fast=[fastping.ROUTE, EVENTS])
    writers.clear()
    yield made
    made.writer.hold.set()  # type: ignore[attr-defined]
    made.writer.stop()


def heartbeat(name: str) -> Monitor:
    config: Any = heartbeats.validate({"period": 3600, "grace": 60})  # stored encrypted
    return Monitor.objects.create(
        org=make_org(),
        name=name,
        kind=Kind.HEARTBEAT,
        confirmations=1,
        config=config,
        state=State.UP,
    )


@inprocess
def test_rows_are_built_from_the_model_so_a_column_no_route_names_is_filled(
    app: Ingest, event_table: None
) -> None:
    with serving(app) as port:
        assert status(raw(port, "GET", "/health/")) == 200  # Django shows its headers
        answer = raw(port, "GET", "/health/event/abc")
    assert (status(answer), answer.endswith(b"\r\n\r\nstored\n")) == (200, True)
    assert app.served == 1
    assert list(Event.objects.values_list("key", "source")) == [("abc", "added later")]


@inprocess
def test_a_second_route_shares_the_one_writer_and_its_batches(
    app: Ingest, event_table: None
) -> None:
    m = heartbeat("a")
    writer: Any = app.writer
    with serving(app) as port, ThreadPoolExecutor(4) as pool:
        raw(port, "GET", f"/ping/{m.ping_id}")  # each route learns Django's headers
        raw(port, "GET", "/health/")
        writer.hold.clear()
        writer.holding.clear()
        first = pool.submit(raw, port, "GET", f"/ping/{m.ping_id}")
        assert writer.holding.wait(10)  # the writer holds the first ping's batch
        waiting = [
            pool.submit(raw, port, "GET", f"/ping/{m.ping_id}"),
            pool.submit(raw, port, "GET", "/health/event/one"),
        ]
        while writer.jobs.qsize() < 2:
            threading.Event().wait(0.01)
        writer.hold.set()
        answers = [f.result(10) for f in (first, *waiting)]
    assert [status(a) for a in answers] == [200, 200, 200]
    assert sorted(writer.batches[-1]) == ["heartbeat pings", "test events"]
    assert writers == [writer.thread]
    assert Ping.objects.filter(monitor=m).count() == 3
    assert Event.objects.filter(key="one").exists()


@inprocess
def test_fast_answers_carry_a_request_id_and_djangos_security_headers(app: Ingest) -> None:
    m = heartbeat("a")
    with serving(django_app) as plain, serving(app) as front:
        by_django = raw(plain, "GET", f"/ping/{m.ping_id}")
        raw(front, "GET", f"/ping/{m.ping_id}")
        fast = [raw(front, "GET", f"/ping/{m.ping_id}") for _ in range(2)]
        given = raw(front, "GET", f"/ping/{m.ping_id}", b"", "X-Request-ID: from-caddy-1234")
        forged = raw(front, "GET", f"/ping/{m.ping_id}", b"", "X-Request-ID: a\tb c")
    assert app.served == 4
    for name in (
        "x-content-type-options",
        "referrer-policy",
        "cross-origin-opener-policy",
        "x-frame-options",
        "x-request-id",
    ):
        assert header(by_django, name) is not None, name
        assert header(fast[0], name) == header(by_django, name) or name == "x-request-id"
    assert header_names(fast[0]) == header_names(by_django)
    ids = [header(a, "X-Request-ID") for a in fast]
    assert all(i and re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    assert header(given, "X-Request-ID") == "from-caddy-1234"
    assert re.fullmatch(r"[0-9a-f]{32}", header(forged, "X-Request-ID") or "")


async def slow_django(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django as in a web process just started, whose first answers are slow."""
    await asyncio.sleep(0.5)
    await django_app(scope, receive, send)


@pytest.fixture
def cold() -> Iterator[Ingest]:
    made = Ingest(slow_django, Writer(), fast=[fastping.ROUTE])
    yield made
    made.writer.stop()


@inprocess
def test_requests_that_come_while_django_shows_the_headers_then_take_the_fast_route(
    cold: Ingest,
) -> None:
    m = heartbeat("a")
    with serving(cold) as front, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: raw(front, "GET", f"/ping/{m.ping_id}"), range(8)))
    assert [status(a) for a in answers] == [200] * 8
    assert cold.served == 7  # one answered by Django, not all eight one after another
    assert Ping.objects.filter(monitor=m).count() == 8


@inprocess
def test_when_djangos_answer_shows_no_headers_those_waiting_for_it_go_to_django(
    cold: Ingest,
) -> None:
    m = heartbeat("a")
    with serving(cold) as front, ThreadPoolExecutor(4) as pool:
        unknown = pool.submit(raw, front, "GET", f"/ping/{uuid.uuid4()}")
        time.sleep(0.2)  # the unknown heartbeat's ping is the one Django answers first
        answers = list(pool.map(lambda _: raw(front, "GET", f"/ping/{m.ping_id}"), range(3)))
        assert status(unknown.result()) == 404
    assert [status(a) for a in answers] == [200] * 3
    assert Ping.objects.filter(monitor=m).count() == 3


@pytest.mark.django_db
def test_djangos_answers_carry_a_request_id(client: Client) -> None:
    first, second = client.get("/health/"), client.get("/health/")
    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]
    given = client.get("/health/", headers={"X-Request-ID": "from-caddy-1234"})
    assert given["X-Request-ID"] == "from-caddy-1234"
    forged = client.get("/health/", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", forged["X-Request-ID"])


@inprocess
def test_the_rate_limit_applies_on_the_fast_path_as_on_djangos(app: Ingest, settings: Any) -> None:
    # Two pings in a burst, then one every five seconds: the test is done well before.
    settings.PING_RATE_LIMIT = 0.2
    fast, slow = heartbeat("fast"), heartbeat("slow")
    rid = f"?rid={uuid.uuid4()}"  # a run id takes Django's path
    with serving(app) as port:
        assert status(raw(port, "GET", f"/ping/{fast.ping_id}")) == 200  # Django's
        assert status(raw(port, "GET", f"/ping/{fast.ping_id}")) == 200  # the fast path
        assert app.served == 1
        over = raw(port, "GET", f"/ping/{fast.ping_id}")
        over_django = raw(port, "GET", f"/ping/{fast.ping_id}{rid}")
        by_django = [status(raw(port, "GET", f"/ping/{slow.ping_id}{rid}")) for _ in range(3)]
    assert (status(over), status(over_django), by_django) == (429, 429, [200, 200, 429])
    assert app.served == 1
    assert header(over, "Retry-After") == header(over_django, "Retry-After") == "1"
    assert header(over, "X-Request-ID") is not None
    assert b"Too many pings for this heartbeat" in over
    assert over.split(b"\r\n\r\n", 1)[1] == over_django.split(b"\r\n\r\n", 1)[1]
    assert Ping.objects.filter(monitor=fast).count() == 2
    assert Ping.objects.filter(monitor=slow).count() == 2


def test_a_route_is_registered_by_its_import_path_and_loaded_by_the_web_process() -> None:
    from onwatch.core import ingest

    assert fastping.ROUTE in ingest.routes()


@inprocess
def test_a_request_answered_send_again_is_not_stored_later_as_well() -> None:
    """Its wait ran out while the writer was stuck: it was told "may not be stored, send
    it again", so the writer must not store it when it comes free (twice, once resent)."""
    writer = Recording()
    app = Ingest(django_app, writer, wait=0.5, fast=[fastping.ROUTE])
    m = heartbeat("a")
    try:
        with serving(app) as port, ThreadPoolExecutor(2) as pool:
            assert status(raw(port, "GET", f"/ping/{m.ping_id}")) == 200  # Django's
            writer.hold.clear()
            writer.holding.clear()
            held = pool.submit(raw, port, "GET", f"/ping/{m.ping_id}")
            assert writer.holding.wait(10)  # its batch is being written
            late = raw(port, "GET", f"/ping/{m.ping_id}")  # waits behind it, runs out
            writer.hold.set()
            first = held.result(10)
            writer.stop()
    finally:
        writer.hold.set()
    assert status(late) == 503 and b"send it again" in late
    assert status(first) in (200, 503)  # written either way; its answer may have run out
    assert Ping.objects.filter(monitor=m).count() == 2  # Django's and the held one


@inprocess
def test_too_many_waiting_requests_are_turned_away_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onwatch.core.ingest import writer as writer_module

    monkeypatch.setattr(writer_module, "MAX_WAITING", 1)
    writer = Recording()
    app = Ingest(django_app, writer, fast=[fastping.ROUTE])
    m = heartbeat("a")
    try:
        with serving(app) as port, ThreadPoolExecutor(2) as pool:
            assert status(raw(port, "GET", f"/ping/{m.ping_id}")) == 200  # Django's
            writer.hold.clear()
            writer.holding.clear()
            held = pool.submit(raw, port, "GET", f"/ping/{m.ping_id}")
            assert writer.holding.wait(10)
            waiting = pool.submit(raw, port, "GET", f"/ping/{m.ping_id}")
            while writer.jobs.qsize() < 1:
                threading.Event().wait(0.01)
            refused = raw(port, "GET", f"/ping/{m.ping_id}")
            writer.hold.set()
            answers = [held.result(10), waiting.result(10)]
            writer.stop()
    finally:
        writer.hold.set()
    assert status(refused) == 503 and header(refused, "Retry-After") == "5"
    assert b"busy writing" in refused and b"not stored" in refused
    assert [status(a) for a in answers] == [200, 200]
    assert app.turned_away == 1
    assert Ping.objects.filter(monitor=m).count() == 3


@pytest.mark.once
def test_a_writer_that_just_wrote_lets_the_waiting_one_of_another_process_go_first(
    settings: Any, tmp_path: Any
) -> None:
    """Without the hand-off, the web process that just released the lock takes it again
    before the woken one runs, and under load the other's pings waited 300 ms."""
    settings.DATA_DIR = tmp_path
    # Each writer opens the lock files itself, so they lock against each other as the
    # writers of two web processes do.
    first, second = Writer(), Writer()
    order: list[str] = []

    def second_writes() -> None:
        with second.turn():
            order.append("second")

    probe = os.open(tmp_path / "ingest.waiting", os.O_RDWR | os.O_CREAT, 0o600)
    with first.turn():
        order.append("first")
        other = threading.Thread(target=second_writes)
        other.start()
        waits = False
        for _ in range(500):  # until the second says it waits (holds the waiting lock)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
                time.sleep(0.01)
            except BlockingIOError:
                waits = True
                break
        assert waits
    with first.turn():
        order.append("first again")
    other.join(10)
    assert order == ["first", "second", "first again"]


@inprocess
def test_the_writer_gets_the_gil_back_quickly_in_a_busy_web_process(app: Ingest) -> None:
    m = heartbeat("a")
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # Python's default
        with serving(app) as port:
            raw(port, "GET", f"/ping/{m.ping_id}")  # the route learns Django's headers
            assert status(raw(port, "GET", f"/ping/{m.ping_id}")) == 200
        assert app.served == 1
        assert sys.getswitchinterval() == pytest.approx(SWITCH_SECONDS)
        assert SWITCH_SECONDS <= 0.001
    finally:
        sys.setswitchinterval(before)


@inprocess
def test_with_ingest_timings_set_each_batch_says_where_its_time_went(
    app: Ingest, settings: Any, tmp_path: Any
) -> None:
    settings.INGEST_TIMINGS = str(tmp_path / "timings")
    m = heartbeat("a")
    with serving(app) as port:
        raw(port, "GET", f"/ping/{m.ping_id}")  # Django's: the route learns its headers
        started = timings.now()
        answers = [raw(port, "GET", f"/ping/{m.ping_id}") for _ in range(3)]
        ended = timings.now()
    assert [status(a) for a in answers] == [200, 200, 200]
    spent = timings.read(settings.INGEST_TIMINGS)
    assert [size for _, size, _ in spent.batches] == [1, 1, 1]
    for at, _, spans in spent.batches:
        assert started <= at <= ended
        assert len(spans) == len(timings.STAGES)
        assert all(span >= 0 for span in spans)
        assert at + sum(spans) / 1000 <= ended  # recorded before its answer went out
    # Writers in tests leave the WAL to SQLite (tests/support/fixtures.py): none recorded.
    assert spent.checkpoints == []


@inprocess
def test_a_writer_in_tests_starts_no_checkpoint_thread_on_the_test_database(
    app: Ingest,
) -> None:
    """The test database is one WAL file for the session: a thread started on it by one
    test lived on through the others, recording into the first one's timings."""
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite has a WAL")
    m = heartbeat("a")
    with serving(app) as port:
        raw(port, "GET", f"/ping/{m.ping_id}")  # Django's: the route learns its headers
        assert status(raw(port, "GET", f"/ping/{m.ping_id}")) == 200
        assert app.served == 1
        raw_connection = app.writer.store.connection.connection  # type: ignore[union-attr]
        [(path,)] = [row[2:] for row in raw_connection.execute("PRAGMA database_list")]
        assert raw_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0
    assert path and path not in writer._checkpointing


@inprocess
def test_a_timings_file_that_cannot_be_opened_stops_only_the_timings(
    app: Ingest, settings: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.INGEST_TIMINGS = str(tmp_path)  # a folder: no file can be opened there
    m = heartbeat("a")
    with serving(app) as port:
        raw(port, "GET", f"/ping/{m.ping_id}")  # Django's: the route learns its headers
        answers = [raw(port, "GET", f"/ping/{m.ping_id}") for _ in range(3)]
    assert [status(a) for a in answers] == [200, 200, 200]
    assert app.served == 3
    assert Ping.objects.filter(monitor=m).count() == 4
    [warned] = [r for r in caplog.records if "ingest timings" in r.getMessage()]
    assert f"cannot write to {tmp_path}" in warned.getMessage()
    assert "timings are no longer recorded" in warned.getMessage()


def test_a_timings_file_that_cannot_be_written_stops_no_checkpoint(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wal.sqlite3"
    recorder = timings.Recorder("/dev/full")  # opens, but every write fails (ENOSPC)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # as the writer's own: the thread's job
        db.execute("CREATE TABLE t (x)")
        checkpoints(str(path), recorder)
        for n in range(3):  # each table's pages reach the database file by a checkpoint
            before = path.stat().st_size
            db.execute(f"CREATE TABLE t{n} AS SELECT randomblob(100000) AS x")
            deadline = time.monotonic() + 10 * CHECKPOINT_SECONDS
            while path.stat().st_size == before and time.monotonic() < deadline:
                time.sleep(0.1)
            assert path.stat().st_size > before, f"no checkpoint after the recorder failed ({n})"
    warned = [r for r in caplog.records if "ingest timings" in r.getMessage()]
    assert len(warned) == 1 and "/dev/full" in warned[0].getMessage()


def test_a_measured_checkpoint_is_recorded_with_what_it_copied(tmp_path: Any) -> None:
    path = tmp_path / "wal.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        recorder = timings.Recorder(str(tmp_path / "timings"))
        checkpoint(db, recorder)
        checkpoint(db, recorder)
    spent = timings.read(str(tmp_path / "timings"))
    # The WAL's frames that are in the database file by then: all, both times.
    copied = [pages for _, _, pages in spent.checkpoints]
    assert copied[0] == copied[1] > 0
    first, second = spent.checkpoints
    assert first[0] < second[0] and first[1] >= 0
    # A batch whose oldest request waited while a checkpoint ran is told apart.
    spent.batches = [(first[0] - 1, 1, [1.0] * 6), (first[0], 1, [1.0] * 6)]
    assert spent.during_checkpoint() == [False, True]


def test_the_wal_is_emptied_but_a_reader_holds_that_up_only_briefly(tmp_path: Any) -> None:
    path = tmp_path / "wal.sqlite3"
    wal = tmp_path / "wal.sqlite3-wal"
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as db,
        closing(sqlite3.connect(path, isolation_level=None)) as reader,
        closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as checkpointer,
    ):
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE t (x)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot: it reads the WAL
        db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(1000)])
        assert checkpoint(checkpointer) > 0  # pages the reader's snapshot keeps out
        started = time.monotonic()
        assert not truncate(checkpointer)
        assert time.monotonic() - started < 0.5  # gives up rather than hold the writer
        assert wal.stat().st_size > 0
        db.execute("INSERT INTO t VALUES (-1)")  # the writer was not left locked out
        reader.execute("COMMIT")
        assert truncate(checkpointer)
        assert wal.stat().st_size == 0
        assert checkpoint(checkpointer) == 0
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file_only:
        assert file_only.execute("SELECT count(*) FROM t").fetchone()[0] == 1001


@pytest.fixture
def truncations(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each TRUNCATE the checkpoint thread tries, and whether it emptied the WAL."""
    settings.SQLITE_WAL_LIMIT_MB = 1
    tried: list[bool] = []

    def counted(conn: Any, recorder: timings.Recorder | None = None) -> bool:
        tried.append(truncate(conn, recorder))
        return tried[-1]

    monkeypatch.setattr(writer, "truncate", counted)
    return tried


def read_while_written(path: Any, snapshot_first: bool, seconds: float, row: int) -> None:
    """A WAL past its limit, written on for `seconds` (rows of `row` bytes) while a read
    holds a snapshot, taken before the WAL grew or after; the read then ends."""
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as db,
        closing(sqlite3.connect(path, isolation_level=None)) as reader,
    ):
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # as the writer's own: the thread's job
        db.execute("CREATE TABLE t (x)")
        if snapshot_first:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchone()  # it reads the WAL
        db.execute("INSERT INTO t VALUES (randomblob(2000000))")  # past the limit at once
        if not snapshot_first:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchone()
        checkpoints(str(path))
        held = time.monotonic() + seconds
        while time.monotonic() < held:
            db.execute("INSERT INTO t VALUES (randomblob(?))", (row,))
            time.sleep(0.01)
        assert Path(f"{path}-wal").stat().st_size > 2**20
        reader.execute("COMMIT")


def emptied(path: Any, truncations: list[bool] | None = None) -> bool:
    """The WAL file is empty, and (given the TRUNCATEs seen) the one that emptied it has
    been counted: the file is empty before `truncate` returns and its result is added."""
    wal = Path(f"{path}-wal")
    deadline = time.monotonic() + 10 * CHECKPOINT_SECONDS

    def told() -> bool:
        return truncations is None or bool(truncations and truncations[-1])

    while (wal.stat().st_size or not told()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return wal.stat().st_size == 0 and told()


@pytest.mark.once
def test_a_long_read_does_not_hold_the_writer_up_again_and_again(
    tmp_path: Any, truncations: list[bool]
) -> None:
    """Each TRUNCATE holds SQLite's write lock while it waits for readers: tried every look
    at the WAL while a read kept it, it held the pings 20 ms every 100 ms."""
    path = tmp_path / "wal.sqlite3"
    read_while_written(
        path, snapshot_first=True, seconds=1.5, row=20000
    )  # some 15 looks at the WAL
    tried_while_read = len(truncations)
    assert emptied(path, truncations)  # once the read ended
    # The read kept what was written after its snapshot in the WAL: not worth trying.
    assert tried_while_read == 0
    assert truncations[-1] and len(truncations) <= 2


@pytest.mark.once
def test_tries_to_empty_the_wal_grow_apart_while_a_read_is_in_it(
    tmp_path: Any, truncations: list[bool]
) -> None:
    path = tmp_path / "wal.sqlite3"
    # Little is left to copy (small rows), yet each TRUNCATE waits for the read and fails.
    read_while_written(path, snapshot_first=False, seconds=2, row=10)
    tried_while_read = len(truncations)
    assert emptied(path, truncations)
    assert 1 <= tried_while_read <= 6  # 0.1, 0.2, 0.4, 0.8, then 1 s apart
    assert not any(truncations[:tried_while_read]) and truncations[-1]
