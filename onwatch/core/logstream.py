"""A job's log as server-sent events, for the pages that follow a running job.

Each line is one event whose `id:` is the line's row id (they only grow within a job), so
a browser that reconnects sends `Last-Event-ID` and gets the lines after it: none lost,
none twice. The data is the line's number and its HTML (ansi.to_html, as the page renders
it). When the job has ended and every line is out, an `end` event gives its state and the
stream closes. A comment goes out when nothing else has for a while, so proxies (Caddy,
nginx) keep the connection open.

The stream is an async generator served by the ASGI handler itself: a viewer holds no
thread while it waits. Each poll is one short query run in the event loop's shared
thread pool, whose few threads keep their database connections between polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

from onwatch.core import ansi
from onwatch.core.models import ENDED, Job, JobLogLine

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
BATCH = 500
# How soon a browser tries again after the connection drops (EventSource's default is 3 s).
RETRY_MS = 1000


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


def state_and_lines(job_id: int, after: int) -> tuple[str | None, list[tuple[int, str]]]:
    """The job's state, read before its lines: an ended state then means every line it
    wrote is among them or before `after`."""
    state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
    rows = JobLogLine.objects.filter(job_id=job_id, id__gt=after).order_by("id")
    return state, list(rows.values_list("id", "text")[:BATCH])


def event(pk: int, n: int, text: str) -> str:
    data = json.dumps({"n": n, "html": str(ansi.to_html(text))})
    return f"id: {pk}\ndata: {data}\n\n"


def end_event(state: str | None) -> bytes:
    data = json.dumps({"state": state or "removed"})
    return f"event: end\ndata: {data}\n\n".encode()


async def events(job_id: int, after: int) -> AsyncIterator[bytes]:
    """The events of the job's lines after line id `after`, until it has ended."""
    # Sent at once, so the response starts (and a proxy passes it on) before any line.
    yield f"retry: {RETRY_MS}\n: following job {job_id}\n\n".encode()
    n = await _db(partial(lines_up_to, job_id, after))
    quiet = 0.0
    while True:
        state, rows = await _db(partial(state_and_lines, job_id, after))
        if rows:
            yield "".join(event(pk, n + i + 1, text) for i, (pk, text) in enumerate(rows)).encode()
            n, after, quiet = n + len(rows), rows[-1][0], 0.0
        if len(rows) == BATCH:
            continue  # more are waiting
        if state is None or state in ENDED:
            yield end_event(state)
            return
        await asyncio.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS
        if quiet >= HEARTBEAT_SECONDS:
            yield b": still running\n\n"
            quiet = 0.0
