"""How the event streams share their database reads: one follower per job and process,
however many watch it; a viewer behind what it holds reads its own way up; a quiet stream
sends a comment now and then so proxies keep it open."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction

from onwatch.core import jobs, logstream
from onwatch.core.models import Job, JobState, Organization

pytestmark = pytest.mark.django_db(transaction=True)


def running_job(lines: int) -> Job:
    job = Job.objects.create(org=Organization.objects.create(name="Acme"), kind="core.sleep")
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING)
    for i in range(1, lines + 1):
        jobs.append_line(job.pk, f"line {i}")
    return job


async def next_lines(stream: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    """The lines of the stream's next chunk that carries any (comments skipped)."""
    while True:
        chunk = (await asyncio.wait_for(anext(stream), 10)).decode()
        found = [json.loads(x[6:]) for x in chunk.splitlines() if x.startswith("data: ")]
        if found:
            return found


def test_viewers_of_a_job_share_one_follower_and_a_late_one_catches_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logstream, "KEEP", 3)
    job = running_job(5)

    async def watch() -> None:
        first = logstream.events(job.pk, 0)
        second = logstream.events(job.pk, 0)
        assert [x["n"] for x in await next_lines(first)] == [1, 2, 3, 4, 5]
        assert [x["n"] for x in await next_lines(second)] == [1, 2, 3, 4, 5]
        [follower] = logstream.FOLLOWERS.values()
        assert follower.viewers == 2
        for i in range(6, 11):
            await sync_to_async(jobs.append_line)(job.pk, f"line {i}")
        seen = [x["html"] for x in await next_lines(first)]
        while len(seen) < 5:
            seen += [x["html"] for x in await next_lines(first)]
        assert seen == [f"line {i}" for i in range(6, 11)]
        # It holds the newest three: one that comes back from line 5 reads 6 and 7 itself.
        assert [n for _, n, _ in follower.rows] == [8, 9, 10]
        line5 = follower.floor - 2  # the floor is line 7's id; ids are consecutive here
        late = logstream.events(job.pk, line5)
        got = await next_lines(late)
        while got[-1]["n"] < 10:
            got += await next_lines(late)
        assert [x["n"] for x in got] == [6, 7, 8, 9, 10]
        assert follower.viewers == 3
        for stream in (first, second, late):
            await stream.aclose()
        assert logstream.FOLLOWERS == {} and follower.task is not None
        await asyncio.sleep(0)
        assert follower.task.cancelled() or follower.task.done()

    asyncio.run(watch())


def test_a_quiet_stream_sends_a_comment_and_ends_with_the_jobs_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logstream, "HEARTBEAT_SECONDS", 0.3)
    job = running_job(1)

    async def watch() -> list[bytes]:
        stream = logstream.events(job.pk, 0)
        chunks = [await anext(stream) for _ in range(3)]
        await sync_to_async(Job.objects.filter(pk=job.pk).update)(state=JobState.FAILED)
        chunks += [chunk async for chunk in stream]
        return chunks

    chunks = asyncio.run(watch())
    assert chunks[0].startswith(b"retry: 1000\n: following job")
    assert chunks[1].startswith(b"id: ") and b'"n": 1' in chunks[1]
    assert chunks[2] == b": still running\n\n"
    assert chunks[-1] == b'event: end\ndata: {"state": "failed"}\n\n'


def _in_own_connection(work: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_line_written_while_a_batch_is_open_does_not_make_the_stream_skip_the_batch() -> None:
    # A step's output stored a chunk at a time while "ann cancelled the job" comes from the
    # web process: on PostgreSQL the single line took a higher id and committed first, the
    # follower moved past it and never showed the batch (a reload did).
    job = running_job(0)
    batch = [f"batch {i}" for i in range(1000)]
    batch_open, release = threading.Event(), threading.Event()

    def write_batch() -> None:
        with transaction.atomic():
            jobs.append_lines(job.pk, batch)
            batch_open.set()
            release.wait(10)  # held open while the single line is written and polled

    async def watch() -> list[str]:
        stream = logstream.events(job.pk, 0)
        seen: list[str] = []

        async def collect() -> None:
            while True:
                seen.extend(x["html"] for x in await next_lines(stream))

        collecting = asyncio.create_task(collect())
        await asyncio.sleep(2 * logstream.POLL_SECONDS)  # following, with no line yet
        writers = [_in_own_connection(write_batch)]
        assert await asyncio.to_thread(batch_open.wait, 10)
        writers.append(_in_own_connection(lambda: jobs.append_line(job.pk, "ann cancelled")))
        await asyncio.sleep(4 * logstream.POLL_SECONDS)  # the follower polls meanwhile
        release.set()
        for writer in writers:
            await asyncio.to_thread(writer.join, 10)
        for _ in range(40):
            if len(seen) > len(batch):
                break
            await asyncio.sleep(logstream.POLL_SECONDS)
        collecting.cancel()
        await asyncio.gather(collecting, return_exceptions=True)
        await stream.aclose()
        return seen

    assert asyncio.run(watch()) == [*batch, "ann cancelled"]
