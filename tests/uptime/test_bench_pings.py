"""bench/pings.py's latency figures: the latencies of the pings sent, none added and none
left out, against a real uvicorn and a real wrk."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from bench import pings
from tests.support.procs import free_port, wait_http

SLOW_SECONDS = 0.4
SLOW_ANSWERS = 8


class SlowFirst:
    """An ASGI app that answers its first SLOW_ANSWERS requests after SLOW_SECONDS and
    the rest at once: a few slow answers among many quick ones, as when the first pings
    of a load went to Django."""

    def __init__(self) -> None:
        self.seen = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen += 1
        if 1 < self.seen <= SLOW_ANSWERS + 1:  # the first is wait_http's
            await asyncio.sleep(SLOW_SECONDS)
        await pings.noop(scope, receive, send)


@pytest.fixture
def slow_first() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(SlowFirst(), port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
def test_wrk_figures_are_the_answers_measured_with_the_slow_ones_kept(slow_first: int) -> None:
    tally = pings.fire_wrk(slow_first, ["x"], seconds=3, concurrency=SLOW_ANSWERS, keep=False)
    answered = tally.statuses[200]
    assert tally.unmatched == 0
    assert len(tally.latencies) == answered > 20 * SLOW_ANSWERS  # every answer, timed once
    slow = [t for t in tally.latencies if t >= SLOW_SECONDS]
    assert len(slow) == SLOW_ANSWERS  # the slow ones are all there
    assert tally.latency(1) >= SLOW_SECONDS * 1000
    # Eight slow answers among hundreds are not the p99 of what was measured ...
    assert tally.latency(0.99) < SLOW_SECONDS * 1000 / 2
    # ... though wrk's own figure, with the samples it adds, makes them so.
    assert tally.wrk_p99 is not None and tally.wrk_p99 > SLOW_SECONDS * 1000 / 2
