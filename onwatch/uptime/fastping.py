"""Heartbeat pings ahead of Django: the hot path of ingest, for thousands of pings a second.

Through Django a ping costs some 7 ms of CPU (a thread hop, a new database connection,
thirteen middleware, three ORM queries), which caps ingest near 150 pings/s. Here the
ordinary pings — a success, /start or /log with no query string, for a heartbeat whose
state does not change — are taken by a small ASGI app in front of Django, and their
database work is done by one thread on one long-lived connection: all pings waiting
when it is free are written in one transaction (a group commit), so each ping is stored
before it is answered and the commit is shared.

What a ping does is still decided by onwatch/uptime/pings.py (`effect`), on a Monitor
read with one prepared SELECT; the writes are the ones Django's quick path makes. Anything
else — a state change, a failure, a run id, a slug URL, an unknown heartbeat, a cookie, a
host or scheme not seen yet — goes to Django untouched, so its answers and rows stay the
reference. The answer's headers are learned from Django too: the first success ping per
host and scheme goes through Django, and its headers are replayed after that.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from onwatch.uptime import pings
from onwatch.uptime.models import Kind, Monitor, Ping
from onwatch.uptime.pings import BODY_REFUSE, PingError, Received

log = logging.getLogger("onwatch.pings")

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# The same URL forms as onwatch/uptime/urls.py, for the UUID form only.
PATH = re.compile(
    r"/ping/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?:/([^/]+))?/?"
)
METHODS = frozenset(("GET", "POST", "HEAD"))
# Longer than SQLite's busy timeout (20 s), so a locked database answers with its own error.
WAIT_SECONDS = 30.0
MAX_BATCH = 500
LEARNED_MAX = 64  # distinct hosts and schemes whose answer headers are kept

OK = "ok"  # stored and applied: answer 200 OK
DJANGO = "django"  # not for the hot path: let Django take it from the start
FAILED = "onwatch could not store the ping: its database failed (see the server log); send it again"


def timed_out(seconds: float) -> str:
    return (
        f"onwatch's database did not answer within {seconds:g} s; the ping may not be "
        "stored, send it again"
    )


@dataclass(slots=True)
class Job:
    ping_id: uuid.UUID
    got: Received
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[str] = field(repr=False)


class Writer:
    """One thread, one connection: takes the jobs waiting, writes them in one transaction,
    answers each with OK, DJANGO or an error text for the person who pinged."""

    def __init__(
        self, alias: str = "default", clock: Callable[[], datetime] = timezone.now
    ) -> None:
        self.alias = alias
        self.clock = clock
        self.jobs: SimpleQueue[Job | None] = SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.sql: Statements | None = None
        self.lock_file: int | None = None

    def submit(self, job: Job) -> None:
        if self.thread is None or not self.thread.is_alive():
            with self.lock:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(target=self.run, name="pings", daemon=True)
                    self.thread.start()
        self.jobs.put(job)

    def stop(self) -> None:
        """Finish the jobs already submitted, close the connection and end the thread."""
        if self.thread is not None and self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()

    def run(self) -> None:
        while batch := self.next_batch():
            try:
                answers = self.write(batch)
            except BaseException:
                # Whatever went wrong, the thread lives on and nobody waits forever.
                log.exception("heartbeat pings: %d could not be written", len(batch))
                answers = [FAILED] * len(batch)
            deliver(batch, answers)
        connections[self.alias].close()

    def next_batch(self) -> list[Job]:
        """The jobs waiting now (at least one; none at the end): while one transaction is
        written the next pings queue up, so the batch grows with the load by itself."""
        batch: list[Job] = []
        job = self.jobs.get()
        while job is not None:
            batch.append(job)
            if len(batch) == MAX_BATCH or self.jobs.empty():
                return batch
            job = self.jobs.get()
        if batch:
            self.jobs.put(None)  # the end came mid-batch: write this one, then end
        return batch

    def write(self, batch: list[Job], again: bool = True) -> list[str]:
        """One transaction for the batch. If it fails, each job again alone on a fresh
        connection: a dropped connection costs nothing, a bad ping only its own answer."""
        try:
            with self.turn(), transaction.atomic(using=self.alias):
                sql = self.statements()
                return [self.take(sql, job) for job in batch]
        except Exception:
            self.sql = None
            with suppress(Exception):
                connections[self.alias].close()
            if not again:
                log.exception("heartbeat ping for %s could not be stored", batch[0].ping_id)
                return [FAILED]
        return [self.write([job], again=False)[0] for job in batch]

    def take(self, sql: Statements, job: Job) -> str:
        monitor = sql.monitor(job.ping_id)
        if monitor is None or monitor.kind != Kind.HEARTBEAT:
            return DJANGO  # Django answers 404
        now = self.clock()
        got = job.got
        done = pings.effect(monitor, got, now) if got.type != Ping.Type.LOG else None
        if done is not None:
            if done.outcome is not None and not done.outcome.ok:
                return DJANGO  # a failure: the state machine's business
            fields = dict(done.fields)
            if done.outcome is not None:
                fields["last_checked_at"] = now
            # The same conditional UPDATE as pings.quick_update: for a heartbeat that is not
            # up with no failures counted, a success changes state, which Django does.
            if sql.update(monitor.pk, fields, done.outcome is not None, now) != 1:
                return DJANGO
        sql.insert(monitor.pk, got, now, done.duration if done is not None else None)
        return OK

    @contextmanager
    def turn(self) -> Iterator[None]:
        """On SQLite, web processes (ONWATCH_WEB_WORKERS) take turns at writing through a
        file lock: the kernel wakes the next one the moment the last is done, where
        SQLite's busy handler would sleep and poll (1, 2, 5, 10 … ms), idling the cores
        and stretching the slowest answers."""
        if connections[self.alias].vendor != "sqlite":
            yield
            return
        if self.lock_file is None:
            path = Path(settings.DATA_DIR) / "pings.lock"
            self.lock_file = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.lock_file, fcntl.LOCK_UN)

    def statements(self) -> Statements:
        if self.sql is None:
            self.sql = Statements(self.alias)
        return self.sql


def deliver(batch: list[Job], answers: list[str]) -> None:
    """Hand the answers to their event loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str], str]]] = {}
    for job, answer in zip(batch, answers, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, answer))
    for loop, results in by_loop.items():
        # A loop closed while its pings were written has nobody waiting.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, results)


def expire(job: Job, seconds: float) -> None:
    if not job.future.done():
        log.error(
            "heartbeat ping for %s: no answer from the database in %g s", job.ping_id, seconds
        )
        job.future.set_result(timed_out(seconds))


def settle(results: list[tuple[asyncio.Future[str], str]]) -> None:
    for future, answer in results:
        if not future.done():
            future.set_result(answer)


CHECKPOINT_SECONDS = 1.0
_checkpointing: set[str] = set()
_checkpointing_lock = threading.Lock()


def checkpoints(path: str) -> None:
    """A thread that checkpoints the SQLite WAL every second (PASSIVE: it never waits for
    or blocks a writer), once per database file and process."""
    with _checkpointing_lock:
        if path in _checkpointing:
            return
        _checkpointing.add(path)
    threading.Thread(target=_checkpoint_loop, args=(str(path),), name="wal", daemon=True).start()


def _checkpoint_loop(path: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path, timeout=0, check_same_thread=False, isolation_level=None)
    while True:
        time.sleep(CHECKPOINT_SECONDS)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.warning("heartbeat pings: a WAL checkpoint failed; trying again", exc_info=True)


class Statements:
    """The three statements of the hot path, built once per connection. Values are
    converted by the model fields exactly as the ORM converts them; on SQLite the
    statements go straight to the driver (Django's cursor wrapper would double their cost)."""

    READ = ("id", "kind", "enabled", "state", "failures", "config", "last_ping_at", "last_start_at")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.connection = connections[alias]
        self.connection.ensure_connection()
        self.sqlite = self.connection.vendor == "sqlite"
        if self.sqlite:
            raw = self.connection.connection
            # The file behind the connection ("" for a database in memory, as in tests).
            path = str(raw.execute("PRAGMA database_list").fetchone()[2] or "")
            if path:
                # No checkpoint inside a ping's transaction: copying the WAL back into the
                # database and its fsync would hold every waiting ping for tens of ms.
                # checkpoints() does it beside the writer.
                raw.execute("PRAGMA wal_autocheckpoint=0")
                checkpoints(path)
        q = self.connection.ops.quote_name
        monitor = Monitor._meta
        self.fields = {f.attname: f for f in monitor.concrete_fields}
        # Monitor.from_db wants the values in the order of the model's fields.
        self.read = [f for f in monitor.concrete_fields if f.attname in self.READ]
        self.names = [f.attname for f in self.read]
        self.table = q(str(monitor.db_table))
        cols = ", ".join(q(str(f.column)) for f in self.read)
        self.select = self.prepared(f"SELECT {cols} FROM {self.table} WHERE {q('ping_id')} = %s")  # noqa: S608  (names from the model)
        self.converters = [self.converters_of(f) for f in self.read]
        self.updates: dict[tuple[tuple[str, ...], bool], str] = {}
        ping = Ping._meta
        self.ping_fields = [f for f in ping.concrete_fields if not f.primary_key]
        names = ", ".join(q(str(f.column)) for f in self.ping_fields)
        marks = ", ".join(["%s"] * len(self.ping_fields))
        self.insert_sql = self.prepared(
            f"INSERT INTO {q(str(ping.db_table))} ({names}) VALUES ({marks})"  # noqa: S608  (names from the model)
        )

    def prepared(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.sqlite else sql

    def execute(self, sql: str, params: list[Any]) -> tuple[Any, ...] | int | None:
        """The first row of a SELECT, or the number of rows written."""
        if self.sqlite:
            raw = self.connection.connection.execute(sql, params)
        else:
            raw = self.connection.cursor()
            raw.execute(sql, params)
        try:
            return raw.fetchone() if sql.startswith("SELECT") else int(raw.rowcount)
        finally:
            raw.close()

    def converters_of(self, f: Any) -> tuple[Any, list[Any]]:
        col = f.get_col(Monitor._meta.db_table)
        found: list[Any] = self.connection.ops.get_db_converters(col)
        return col, found + col.get_db_converters(self.connection)

    def monitor(self, ping_id: uuid.UUID) -> Monitor | None:
        key = self.fields["ping_id"].get_db_prep_value(ping_id, self.connection)
        row = self.execute(self.select, [key])
        if not isinstance(row, tuple):
            return None
        values = []
        for value, (col, converters) in zip(row, self.converters, strict=True):
            for convert in converters:
                value = convert(value, col, self.connection)
            values.append(value)
        return Monitor.from_db(self.alias, self.names, values)

    def prep(self, f: Any, value: Any, now: datetime, now_prepped: Any) -> Any:
        # Most datetimes of a ping are its own time: converted once.
        if value is now:
            return now_prepped
        return f.get_db_prep_save(value, self.connection)

    def update(self, pk: int, fields: dict[str, Any], only_if_up: bool, now: datetime) -> int:
        key = (tuple(fields), only_if_up)
        sql = self.updates.get(key) or self.update_sql(*key)
        at = self.fields["last_ping_at"].get_db_prep_save(now, self.connection)
        params = [self.prep(self.fields[n], v, now, at) for n, v in fields.items()]
        changed = self.execute(sql, [*params, pk])
        return changed if isinstance(changed, int) else 0

    def update_sql(self, names: tuple[str, ...], only_if_up: bool) -> str:
        q = self.connection.ops.quote_name
        sets = ", ".join(f"{q(str(self.fields[n].column))} = %s" for n in names)
        where = f"{q('id')} = %s"
        if only_if_up:
            where += f" AND {q('state')} = 'up' AND {q('failures')} = 0"
        sql = self.prepared(f"UPDATE {self.table} SET {sets} WHERE {where}")  # noqa: S608  (names from the model)
        self.updates[(names, only_if_up)] = sql
        return sql

    def insert(self, monitor_id: int, got: Received, now: datetime, took: timedelta | None) -> None:
        # The values pings.record gives Ping.objects.create, cut the same way.
        values = {
            "monitor_id": monitor_id,
            "at": now,
            "type": got.type,
            "exit_status": got.exit_status,
            "run_id": got.run_id,
            "duration_ms": int(took.total_seconds() * 1000) if took is not None else None,
            "body": got.body,
            "remote_addr": got.remote_addr[:45],
            "method": got.method[:8],
            "user_agent": got.user_agent[:200],
        }
        params = [f.get_db_prep_save(values[f.attname], self.connection) for f in self.ping_fields]
        self.execute(self.insert_sql, params)


@dataclass(slots=True)
class Request:
    """What the hot path needs from a ping request; None from `request` when Django must
    take it."""

    ping_id: uuid.UUID
    type: str
    exit_status: int | None
    method: str
    declared: int | None  # Content-Length
    user_agent: str
    remote_addr: str
    key: tuple[bytes, ...]  # the host and scheme its answer headers were learned for


def request(scope: Scope) -> Request | None:
    method = scope["method"].upper()
    client = scope.get("client")
    if method not in METHODS or scope.get("query_string") or scope.get("root_path") or not client:
        return None
    found = PATH.fullmatch(scope["path"])
    if found is None:
        return None
    try:
        kind, exit_status = pings.parse_action(found.group(2))
    except PingError:
        return None  # Django answers 400 with the reason
    if kind == Ping.Type.FAIL:
        return None  # changes state: Django's path
    return with_headers(scope, found.group(1), kind, exit_status, method, client[0])


def with_headers(
    scope: Scope, code: str, kind: str, exit_status: int | None, method: str, client: str
) -> Request | None:
    agents: list[str] = []
    declared: int | None = None
    host, proto = b"", b""
    for name, value in scope["headers"]:
        if name == b"user-agent":
            agents.append(value.decode("latin-1"))
        elif name == b"host":
            host = value
        elif name == b"x-forwarded-proto":
            proto = value
        elif name == b"content-length":
            if not value.isdigit() or declared is not None:
                return None
            declared = int(value)
        elif name in (b"cookie", b"transfer-encoding"):
            return None  # sessions and streamed bodies: Django's business
    if declared is not None and declared > BODY_REFUSE:
        return None  # Django answers 413
    key = (scope["scheme"].encode(), proto, host)
    return Request(
        uuid.UUID(code), kind, exit_status, method, declared, ",".join(agents), client, key
    )


class FastPings:
    """The ASGI app in front of Django: the hot path of /ping/<uuid>, everything else to
    `app` unchanged."""

    def __init__(self, app: App, writer: Writer | None = None, wait: float = WAIT_SECONDS) -> None:
        self.app = app
        self.writer = writer or Writer()
        self.wait = wait
        self.answers: dict[tuple[bytes, ...], Headers] = {}
        self.served = 0  # pings answered here, not by Django (for tests and curiosity)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/ping/"):
            await self.app(scope, receive, send)
            return
        found = request(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        received = await read_body(receive, found.declared)
        if received is None:
            return  # the client went away before it finished sending
        body, replay = received
        headers = self.answers.get(found.key)
        if headers is None or body is None:
            await self.app(scope, replayed(replay, receive), self.learning(found.key, send))
            return
        answer = await self.store(found, body)
        if answer == DJANGO:
            await self.app(scope, replayed(replay, receive), send)
        elif answer == OK:
            self.served += 1
            await respond(send, 200, headers, b"OK\n")
        else:
            await respond(send, 503, headers, answer.encode() + b"\n")

    async def store(self, found: Request, body: bytes) -> str:
        loop = asyncio.get_running_loop()
        got = Received(
            type=found.type,
            exit_status=found.exit_status,
            body=pings.body_text(body),
            remote_addr=found.remote_addr,
            method=found.method,
            user_agent=found.user_agent,
        )
        job = Job(found.ping_id, got, loop, loop.create_future())
        self.writer.submit(job)
        # A timer rather than wait_for: no task per ping, and the job is never cancelled.
        timer = loop.call_later(self.wait, expire, job, self.wait)
        try:
            return await job.future
        finally:
            timer.cancel()

    def learning(self, key: tuple[bytes, ...], send: Send) -> Send:
        """`send` that keeps the headers of Django's answer to a success ping."""
        started: list[Message] = []

        async def forward(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            elif (
                started
                and started[0]["status"] == 200
                and message.get("body") == b"OK\n"
                and not message.get("more_body")
                and key not in self.answers
                and len(self.answers) < LEARNED_MAX
            ):
                self.answers[key] = list(started[0]["headers"])
                scheme, proto, host = (part.decode("latin-1") for part in key)
                log.info(
                    "heartbeat pings to %s://%s are now taken ahead of Django",
                    proto or scheme,
                    host,
                )
            await send(message)

        return forward


async def read_body(
    receive: Receive, declared: int | None
) -> tuple[bytes | None, list[Message]] | None:
    """The body (None when Django must judge it) and the messages to replay to Django;
    None when the client disconnected."""
    replay: list[Message] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        replay.append(message)
        size += len(message.get("body", b""))
        if size > BODY_REFUSE:
            return None, replay
        if not message.get("more_body"):
            break
    body = b"".join(m.get("body", b"") for m in replay)
    # Django reads exactly Content-Length bytes, and none without it.
    if len(body) != (declared or 0):
        return None, replay
    return body, replay


def replayed(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()

    return again


async def respond(send: Send, status: int, learned: Headers, body: bytes) -> None:
    length = str(len(body)).encode()
    # In Django's order, so an answer from here is byte for byte an answer from Django.
    headers = [(k, length if k.lower() == b"content-length" else v) for k, v in learned]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
