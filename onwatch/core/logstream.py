"""A job's log as server-sent events, for the pages that follow a running job.

Each line is one event whose `id:` is the line's row id (they only grow within a job), so
a browser that reconnects sends `Last-Event-ID` and gets the lines after it: none lost,
none twice. The data is the line's number and its HTML (ansi.to_html, as the page renders
it). When the job has ended and every line is out, an `end` event gives its state and the
stream closes. A comment goes out when nothing else has for a while, so proxies (Caddy,
nginx) keep the connection open.

Whether the viewer may still see the job is asked again every LOG_STREAM_RECHECK_SECONDS
(settings; 15 by default, as a stream may stay open for hours): once they signed out, lost
their session, left the organization or lost the permission, a `closed` event says so and
the stream ends.

The stream is an async generator served by the ASGI handler itself: a viewer holds no
thread while it waits. One Follower per job and web process asks the database for the
job's new lines a few times a second, however many people watch it, and keeps the recent
ones; a viewer that is further behind (a reconnect after a long while) reads its own way
up from the database first. Database reads run in the event loop's shared thread pool,
whose few threads keep their connections between polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from onwatch.core import ansi
from onwatch.core.models import ENDED, Job, JobLogLine

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
BATCH = 500
KEEP = 2000  # recent lines a follower holds for its viewers
# How soon a browser tries again after the connection drops (EventSource's default is 3 s).
RETRY_MS = 1000

Row = tuple[int, int, str]  # line id, line number, text


def _query[T](read: Callable[[], T]) -> T:
    try:
        return read()
    except DatabaseError:
        # A broken connection (the database restarted) is not reused by the next poll;
        # the stream ends with the error and the browser reconnects where it left off.
        connection.close()
        raise


async def _db[T](read: Callable[[], T]) -> T:
    # Not thread-sensitive: the pool's threads are shared by every stream, instead of a
    # thread (and a database connection) per viewer.
    return await sync_to_async(_query, thread_sensitive=False)(read)


def lines_up_to(job_id: int, after: int) -> int:
    return JobLogLine.objects.filter(job_id=job_id, id__lte=after).count()


def newest(job_id: int) -> tuple[int, int]:
    """The job's last line id and how many lines it has."""
    lines = JobLogLine.objects.filter(job_id=job_id).order_by("-id")
    last = lines.values_list("id", flat=True).first()
    return (last, lines.count()) if last is not None else (0, 0)


def state_and_lines(job_id: int, after: int) -> tuple[str | None, list[tuple[int, str]]]:
    """The job's state, read before its lines: an ended state then means every line it
    wrote is among them or before `after`."""
    state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
    rows = JobLogLine.objects.filter(job_id=job_id, id__gt=after).order_by("id")
    return state, list(rows.values_list("id", "text")[:BATCH])


@dataclass(eq=False)
class Follower:
    """Polls one job's new lines for all its viewers in this process."""

    job_id: int
    last: int  # the newest line id read
    n: int  # its line number
    floor: int = 0  # lines up to this id are not held (rows holds those after it)
    rows: list[Row] = field(default_factory=list)
    state: str | None = None
    ended: bool = False
    broken: BaseException | None = None
    viewers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def since(self, after: int) -> list[Row] | None:
        """The held lines after line id `after`; None when it is before what is held."""
        if after < self.floor:
            return None
        return [row for row in self.rows if row[0] > after]

    def take(self, found: list[tuple[int, str]]) -> None:
        self.rows += [(pk, self.n + i + 1, text) for i, (pk, text) in enumerate(found)]
        self.n, self.last = self.n + len(found), found[-1][0]
        if len(self.rows) > KEEP:
            self.floor = self.rows[-KEEP - 1][0]
            del self.rows[:-KEEP]

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def run(self) -> None:
        try:
            while True:
                state, found = await _db(partial(state_and_lines, self.job_id, self.last))
                if found:
                    self.take(found)
                    self.wake()
                if len(found) == BATCH:
                    continue  # more are waiting
                if state is None or state in ENDED:
                    self.state, self.ended = state, True
                    return
                await asyncio.sleep(POLL_SECONDS)
        except Exception as e:  # handed to every viewer, which raises it
            self.broken = e
        finally:
            self.wake()


FOLLOWERS: dict[tuple[asyncio.AbstractEventLoop, int], Follower] = {}


async def follower_of(job_id: int) -> Follower:
    """The job's follower in this process (started if none is), counting one viewer more."""
    key = (asyncio.get_running_loop(), job_id)
    found = FOLLOWERS.get(key)
    if found is None or found.ended or found.broken:
        last, n = await _db(partial(newest, job_id))
        # Looked up again: another viewer may have started one while this one waited.
        found = FOLLOWERS.get(key)
        if found is None or found.ended or found.broken:
            found = FOLLOWERS[key] = Follower(job_id, last=last, n=n, floor=last)
            found.task = found.loop.create_task(found.run())
    found.viewers += 1
    return found


def let_go(follower: Follower) -> None:
    follower.viewers -= 1
    if follower.viewers == 0:
        if follower.task is not None:
            follower.task.cancel()
        key = (follower.loop, follower.job_id)
        if FOLLOWERS.get(key) is follower:
            del FOLLOWERS[key]


def event(pk: int, n: int, text: str) -> str:
    data = json.dumps({"n": n, "html": str(ansi.to_html(text))})
    return f"id: {pk}\ndata: {data}\n\n"


# Sent once the viewer may no longer see the job; the page stops following and says why.
CLOSED_EVENT = (
    "event: closed\ndata: "
    + json.dumps(
        {"reason": "You can no longer see this job: you were signed out or your access changed."}
    )
    + "\n\n"
).encode()


def end_event(state: str | None) -> bytes:
    data = json.dumps({"state": state or "removed"})
    return f"event: end\ndata: {data}\n\n".encode()


async def behind(job_id: int, after: int, n: int) -> list[Row]:
    """Lines after `after` read for one viewer that is behind what its follower holds."""
    _, found = await _db(partial(state_and_lines, job_id, after))
    return [(pk, n + i + 1, text) for i, (pk, text) in enumerate(found)]


async def events(
    job_id: int, after: int, allowed: Callable[[], bool] = lambda: True
) -> AsyncGenerator[bytes, None]:
    """The events of the job's lines after line id `after`, until it has ended or
    `allowed` (a database read, asked every LOG_STREAM_RECHECK_SECONDS) says the viewer may
    no longer see it."""
    # Sent at once, so the response starts (and a proxy passes it on) before any line.
    yield f"retry: {RETRY_MS}\n: following job {job_id}\n\n".encode()
    n = await _db(partial(lines_up_to, job_id, after))
    follower = await follower_of(job_id)
    loop = asyncio.get_running_loop()
    recheck = settings.LOG_STREAM_RECHECK_SECONDS
    recheck_at = loop.time() + recheck
    try:
        while True:
            if loop.time() >= recheck_at:
                if not await _db(allowed):
                    yield CLOSED_EVENT
                    return
                recheck_at = loop.time() + recheck
            changed = follower.changed  # taken first: a change after the look below wakes it
            rows = follower.since(after)
            if rows is None:
                rows = await behind(job_id, after, n)
            if rows:
                yield "".join(event(pk, num, text) for pk, num, text in rows).encode()
                after, n = rows[-1][0], rows[-1][1]
                continue
            if follower.broken is not None:
                raise follower.broken
            if follower.ended:
                yield end_event(follower.state)
                return
            try:
                wait = min(HEARTBEAT_SECONDS, recheck_at - loop.time())
                await asyncio.wait_for(changed.wait(), max(wait, 0.0))
            except TimeoutError:
                yield b": still running\n\n"
    finally:
        let_go(follower)
