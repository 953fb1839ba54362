"""One writer thread per process: the items of every fast route, written in group commits.

All items waiting when the thread is free are written in one transaction on one
long-lived connection, so each is stored before it is answered and the commit is shared;
while one batch is written the next queues up, so batches grow with the load by itself.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from django.conf import settings
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from onwatch.core.ingest import Answer, Route
from onwatch.core.ingest.digester import Digester
from onwatch.core.ingest.store import Store
from onwatch.core.ingest.timings import Batch, Recorder, now

log = logging.getLogger("onwatch.ingest")

MAX_BATCH = 500
# Requests waiting for the writer beyond this are refused at once (503, Retry-After)
# rather than queued without end while the database is stuck: some 10 s of ingest at full
# speed, a few MB of memory.
MAX_WAITING = 20_000


def failed(noun: str) -> str:
    return (
        f"onwatch could not store the {noun}: its database failed (see the server log); "
        "send it again"
    )


def busy(noun: str) -> str:
    return f"onwatch is busy writing; the {noun} was not stored, send it again in a few seconds"


def timed_out(seconds: float, noun: str) -> str:
    return (
        f"onwatch's database did not answer within {seconds:g} s; the {noun} may not be "
        "stored, send it again"
    )


@dataclass(slots=True)
class Job:
    route: Route
    item: Any
    request_id: str
    loop: asyncio.AbstractEventLoop
    # The route's answer; None: Django takes the request.
    future: asyncio.Future[Answer | None] = field(repr=False)
    queued: float = field(default_factory=now, repr=False)


class Writer:
    """One thread, one connection: takes the jobs waiting, writes them in one transaction,
    answers each through its future."""

    # Whether it leaves the WAL's checkpoints to its own thread (checkpoints()). Off in
    # tests (tests/support/fixtures.py): their database is one file for the whole session,
    # and the thread, once started on it, would outlive the test and record into its timings.
    checkpoints: bool = True

    def __init__(
        self, alias: str = "default", clock: Callable[[], datetime] = timezone.now
    ) -> None:
        self.alias = alias
        self.clock = clock
        self.jobs: SimpleQueue[Job | None] = SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.store: Store | None = None
        self.lock_files: tuple[int, int] | None = None
        self.recorder: Recorder | None = None  # ONWATCH_INGEST_TIMINGS (timings.py)
        self.timing: Batch | None = None  # the batch being written, when measured
        self.tuned: object = None  # the SQLite connection whose busy handler is off
        self.submitted = float("-inf")  # when the last job came (time.monotonic)
        # What follows the answers of routes that queue, once requests pause.
        self.digester = Digester(lambda: self.submitted)

    def submit(self, job: Job) -> bool:
        """Queue the job; False (and nothing queued) when too many wait already."""
        if self.jobs.qsize() >= MAX_WAITING:
            return False
        self.submitted = time.monotonic()
        if self.thread is None or not self.thread.is_alive():
            with self.lock:
                if self.thread is None or not self.thread.is_alive():
                    quick_turns()
                    self.thread = threading.Thread(target=self.run, name="ingest", daemon=True)
                    self.thread.start()
        self.jobs.put(job)
        return True

    def stop(self) -> None:
        """Finish the jobs already submitted, close the connection and end the thread."""
        if self.thread is not None and self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()
        self.digester.stop()

    def run(self) -> None:
        if settings.INGEST_TIMINGS and self.recorder is None:
            self.recorder = Recorder(settings.INGEST_TIMINGS)
        ended = False
        while not ended and (first := self.jobs.get()) is not None:
            self.timing = Batch(queued=first.queued, taken=now()) if self.recorder else None
            with self.turn():
                self.mark("turn")
                # Gathered once it is this process's turn: what arrived during the wait
                # shares the transaction, rather than waiting for another turn.
                batch, ended = self.gather(first)
                # One whose wait ran out was answered "not stored, send it again": storing
                # it now would store it twice when its sender does.
                batch = [job for job in batch if not job.future.done()]
                answers = self.written(batch)
            deliver(batch, answers, self.measured(len(batch)))
            if any(job.route.digest is not None for job in batch):
                self.digester.wake()  # committed: the digest may take it
        connections[self.alias].close()

    def mark(self, moment: str) -> None:
        if self.timing is not None:
            setattr(self.timing, moment, now())

    def measured(self, size: int) -> Measured | None:
        """The batch's timing and where to record it once answered, when measured."""
        if self.timing is None or self.recorder is None or not size:
            return None
        self.timing.size = size
        return Measured(self.timing, self.recorder)

    def gather(self, first: Job) -> tuple[list[Job], bool]:
        """`first` and the jobs waiting behind it (MAX_BATCH at most); True when the end
        came among them."""
        batch = [first]
        while len(batch) < MAX_BATCH and not self.jobs.empty():
            job = self.jobs.get()
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def written(self, batch: list[Job]) -> list[Answer | None]:
        if not batch:
            return []
        try:
            return self.write(batch)
        except BaseException:
            # Whatever went wrong, the thread lives on and nobody waits forever.
            log.exception("ingest: %d requests could not be written", len(batch))
            return [job.route.refusal(503, failed(job.route.noun)) for job in batch]

    def write(self, batch: list[Job], again: bool = True) -> list[Answer | None]:
        """One transaction for the batch. If it fails, each job again alone on a fresh
        connection: a dropped connection costs nothing, a bad item only its own answer."""
        try:
            with self.write_lock():
                self.mark("began")  # BEGIN IMMEDIATE: SQLite's write lock is held
                store = self.opened()
                answers = written_by_route(store, batch, self.clock)
                store.flush()
                self.mark("written")
            self.mark("committed")
            return answers
        except Exception:
            if self.store is not None:
                self.store.discard()
            self.store = None
            with suppress(Exception):
                connections[self.alias].close()
            if not again:
                job = batch[0]
                log.exception(
                    "ingest: %s %s could not be stored (request %s)",
                    job.route.noun,
                    job.item,
                    job.request_id,
                )
                return [job.route.refusal(503, failed(job.route.noun))]
        return [self.write([job], again=False)[0] for job in batch]

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """transaction.atomic, begun the moment SQLite's write lock is free.

        Another process's write (a page, the worker, the scheduler) holds it now and then.
        SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries: every request
        waiting then waited on after the lock was free (measured: 10 ms more after a lock
        held 30 ms, 99 ms more after one held 330 ms). The writer's connection has it off
        and tries again every half ms."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        self.without_busy_handler()
        with ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(transaction.atomic(using=self.alias))
                    break
                except OperationalError as error:
                    # SQLite's SQLITE_BUSY; PostgreSQL waits for its locks by itself.
                    locked = "database is locked" in str(error)
                    if not locked or time.monotonic() >= deadline:
                        raise
                time.sleep(LOCK_POLL_SECONDS)
            yield

    def without_busy_handler(self) -> None:
        connection = connections[self.alias]
        if connection.vendor != "sqlite":
            return
        connection.ensure_connection()
        if connection.connection is not self.tuned:  # a new connection after a failure
            connection.connection.execute("PRAGMA busy_timeout=0")
            self.tuned = connection.connection

    @contextmanager
    def turn(self) -> Iterator[None]:
        """On SQLite, web processes (ONWATCH_WEB_WORKERS) take turns at writing through a
        file lock: the kernel wakes the next one the moment the last is done, where
        SQLite's busy handler would sleep and poll (1, 2, 5, 10 … ms), idling the cores
        and stretching the slowest answers.

        A lock alone is not fair: under load the process that just wrote takes it again
        before the woken one runs, and the other's requests waited 300 ms. So a writer
        that wants the lock says so by holding a second lock shared, and one that finds
        somebody waiting lets them go first."""
        if connections[self.alias].vendor != "sqlite":
            yield
            return
        if self.lock_files is None:
            folder = Path(settings.DATA_DIR)
            self.lock_files = (
                os.open(folder / "ingest.lock", os.O_RDWR | os.O_CREAT, 0o600),
                os.open(folder / "ingest.waiting", os.O_RDWR | os.O_CREAT, 0o600),
            )
        lock, waiting = self.lock_files
        try:
            fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(waiting, fcntl.LOCK_EX)  # until every waiter has had its turn
        fcntl.flock(waiting, fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(waiting, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def opened(self) -> Store:
        if self.store is None:
            self.store = Store(self.alias)
            if self.store.sqlite and self.checkpoints:
                without_autocheckpoint(self.store, self.recorder)
        return self.store


# How long the writer waits for SQLite's write lock: as long as onwatch's other
# connections do (their busy timeout, config.py); and how often it tries meanwhile.
LOCK_WAIT_SECONDS = 20.0
LOCK_POLL_SECONDS = 0.0005


def written_by_route(
    store: Store, batch: list[Job], clock: Callable[[], datetime]
) -> list[Answer | None]:
    """Each job's answer: a route with `write_all` writes its jobs of the batch at once."""
    answers: list[Answer | None] = [None] * len(batch)
    together: dict[int, list[int]] = {}
    for i, job in enumerate(batch):
        if job.route.write_all is None:
            answers[i] = job.route.write(store, job.item, clock())
        else:
            together.setdefault(id(job.route), []).append(i)
    for places in together.values():
        write_all = batch[places[0]].route.write_all
        assert write_all is not None
        found = write_all(store, [batch[i].item for i in places], clock())
        for i, answer in zip(places, found, strict=True):
            answers[i] = answer
    return answers


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
SWITCH_SECONDS = 0.0005


def quick_turns() -> None:
    """Let the writer thread have the GIL back within 0.5 ms, not 5 ms.

    Every SQL statement releases the GIL and takes it back; in a busy web process the
    event loop holds it meanwhile, so with Python's default each statement of a batch
    could wait 5 ms, all while this process holds the writers' file lock. Under load
    that made the slowest pings take 100–220 ms; with 0.5 ms, 44–50 ms on the same
    loaded machine (bench/pings.py). Process-wide, so only web processes, the ones
    that run a writer, pay the extra switches."""
    sys.setswitchinterval(SWITCH_SECONDS)


@dataclass(slots=True)
class Measured:
    """A batch's timing, recorded when the last of its event loops took its answers."""

    timing: Batch
    recorder: Recorder
    loops: int = 0

    def answered(self) -> None:
        self.timing.answered.append(now())
        if len(self.timing.answered) == self.loops:
            self.recorder.record(self.timing)


def deliver(batch: list[Job], answers: list[Answer | None], measured: Measured | None) -> None:
    """Hand the answers to their event loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Answer | None], Any]]] = {}
    for job, answer in zip(batch, answers, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, answer))
    if measured is not None:
        measured.loops = len(by_loop)
    for loop, results in by_loop.items():
        # A loop closed while its items were written has nobody waiting.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, results, measured)


def expire(job: Job, seconds: float) -> None:
    if not job.future.done():
        log.error(
            "ingest: no answer from the database in %g s for %s %s (request %s)",
            seconds,
            job.route.noun,
            job.item,
            job.request_id,
        )
        job.future.set_result(job.route.refusal(503, timed_out(seconds, job.route.noun)))


def settle(
    results: list[tuple[asyncio.Future[Answer | None], Answer | None]],
    measured: Measured | None = None,
) -> None:
    for future, answer in results:
        if not future.done():
            future.set_result(answer)
    if measured is not None:
        measured.answered()


def without_autocheckpoint(store: Store, recorder: Recorder | None = None) -> None:
    """No checkpoint inside a batch's transaction: copying the WAL back into the database
    and its fsync would hold every waiting request for tens of ms. checkpoints() does it
    beside the writer."""
    raw = store.connection.connection
    # The file behind the connection ("" for a database in memory, as in tests).
    path = str(raw.execute("PRAGMA database_list").fetchone()[2] or "")
    if path:
        raw.execute("PRAGMA wal_autocheckpoint=0")
        checkpoints(path, recorder)


CHECKPOINT_SECONDS = 1.0
CHECKPOINT_NICE = 10
# A PASSIVE checkpoint never catches up with a writer that keeps writing, and SQLite
# starts the WAL over only after one that did: under steady pings it grew by some 25 MB
# a second without end. Past ONWATCH_SQLITE_WAL_LIMIT_MB it is emptied (TRUNCATE); its
# size is looked at this often.
WAL_LOOK_SECONDS = 0.1
# TRUNCATE holds SQLite's write lock while it copies what the PASSIVE one before it left
# and waits for readers to leave the WAL: given up after this, so a read never holds the
# pings for longer.
TRUNCATE_WAIT_MS = 20
# Before it, PASSIVE ones (PASSES at most) until this many pages are left to copy. More
# left means a read in progress (a backup, a report, a sqlite3 shell) keeps its snapshot's
# pages in the WAL, and TRUNCATE would hold the writer TRUNCATE_WAIT_MS only to fail.
TRUNCATE_LEFT_FRAMES = 256
PASSES = 3
_checkpointing: set[str] = set()
_checkpointing_lock = threading.Lock()


def checkpoints(path: str, recorder: Recorder | None = None) -> None:
    """A thread that checkpoints the SQLite WAL every second (PASSIVE: it never waits for
    or blocks a writer), and empties it once it passes ONWATCH_SQLITE_WAL_LIMIT_MB; once
    per database file and process."""
    with _checkpointing_lock:
        if path in _checkpointing:
            return
        _checkpointing.add(path)
    args = (str(path), recorder)
    threading.Thread(target=_checkpoint_loop, args=args, name="wal", daemon=True).start()


def _checkpoint_loop(path: str, recorder: Recorder | None) -> None:
    import sqlite3

    # Below the threads that answer: copying the WAL into the database is never urgent,
    # and at their priority it took the CPU from them, so batches written while one ran
    # were 3-5 times as often over 20 ms (bench/pings.py).
    with suppress(OSError):  # Linux: the priority of this thread alone
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKPOINT_NICE)
    conn = sqlite3.connect(path, timeout=0, check_same_thread=False, isolation_level=None)
    wal = Path(f"{path}-wal")
    limit = settings.SQLITE_WAL_LIMIT_MB * 2**20
    last = time.monotonic()
    wait = WAL_LOOK_SECONDS  # before the WAL's size is acted on again
    while True:
        time.sleep(WAL_LOOK_SECONDS)
        since = time.monotonic() - last
        big = since >= wait and wal_bytes(wal) > limit
        if not big and since < CHECKPOINT_SECONDS:
            continue
        last = time.monotonic()
        try:
            if big:
                wait = emptying(conn, recorder, wait)
            else:
                checkpoint(conn, recorder)
        except sqlite3.Error:
            log.warning("ingest: a WAL checkpoint failed; trying again", exc_info=True)


def emptying(conn: Any, recorder: Recorder | None, wait: float) -> float:
    """Copy the WAL into the database and empty it if no read keeps it; how long before
    the next try. Each TRUNCATE that fails has held the writer up for nothing, so tries
    grow apart while a read goes on."""
    left = checkpoint(conn, recorder)
    # What the writer added meanwhile is copied while it goes on writing, so that
    # TRUNCATE, which holds it up, finds little left to copy.
    for _ in range(PASSES):
        if left <= TRUNCATE_LEFT_FRAMES:
            break
        left = checkpoint(conn, recorder)
    if left > TRUNCATE_LEFT_FRAMES:
        return CHECKPOINT_SECONDS  # a long read keeps its snapshot's pages in the WAL
    if truncate(conn, recorder):
        return WAL_LOOK_SECONDS
    return min(2 * wait, CHECKPOINT_SECONDS)  # a read was in the WAL: soon over, most likely


def wal_bytes(wal: Path) -> int:
    try:
        return wal.stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint(conn: Any, recorder: Recorder | None = None) -> int:
    """One PASSIVE checkpoint on `conn` (a sqlite3 connection), noted when measured; the
    pages it left in the WAL uncopied."""
    started = now()
    # Its frames in the WAL, and those copied into the database (-1 each when another
    # process's checkpoint ran at the same moment).
    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if recorder is not None:
        recorder.checkpointed(started, copied)
    left: int = max(0, frames - copied)
    return left


def truncate(conn: Any, recorder: Recorder | None = None) -> bool:
    """Copy the rest of the WAL and empty it, waiting TRUNCATE_WAIT_MS at most for the
    writer and readers; whether it was emptied."""
    started = now()
    conn.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
    try:
        busy, _, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute("PRAGMA busy_timeout=0")
    if recorder is not None:
        recorder.checkpointed(started, copied)
    return not busy
