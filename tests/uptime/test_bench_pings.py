"""bench/pings.py's latency figures: the latencies of the pings sent, none added and none
left out, against a real uvicorn and a real wrk."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import pytest

from bench import pings
from tests.support.asgi import serving

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
        if self.seen <= SLOW_ANSWERS:
            await asyncio.sleep(SLOW_SECONDS)
        await pings.noop(scope, receive, send)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt install wrk)")
def test_wrk_figures_are_the_answers_measured_with_the_slow_ones_kept() -> None:
    with serving(SlowFirst()) as port:
        tally = pings.fire_wrk(port, ["x"], seconds=3, concurrency=SLOW_ANSWERS, keep=False)
    answered = tally.statuses[200]
    assert tally.unmatched == 0
    assert len(tally.latencies) == answered > 20 * SLOW_ANSWERS  # every answer, timed once
    slow = [t for t in tally.latencies if t >= SLOW_SECONDS]
    assert len(slow) >= SLOW_ANSWERS  # the slow ones are all there
    assert tally.latency(1) >= SLOW_SECONDS * 1000
    # Eight slow answers among hundreds are not the p99 of what was measured ...
    assert tally.latency(0.99) < SLOW_SECONDS * 1000 / 2
    # ... though wrk's own figure, with the samples it adds, makes them so.
    assert tally.wrk_p99 is not None and tally.wrk_p99 > SLOW_SECONDS * 1000 / 2


class Stalled:
    """An ASGI app that holds every answer from 0.5 s after its first request to 0.8 s."""

    def __init__(self) -> None:
        self.first: float | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        now = time.monotonic()
        self.first = self.first or now
        if 0.5 <= now - self.first < 0.8:
            await asyncio.sleep(self.first + 0.8 - now)
        await pings.noop(scope, receive, send)


def test_paced_pings_are_sent_when_due_while_the_server_is_held_up() -> None:
    with serving(Stalled()) as port, pings.Paced(port, ["x"], 1.5, 0.01) as paced:
        pass
    assert paced.tally.statuses == {200: 150} and len(paced.tally.latencies) == 150
    # Those due during the 0.3 s stall waited for its end, each from the moment it was due:
    # one client waiting for each answer before the next would have sent one.
    held = [t for t in paced.tally.latencies if t >= 0.1]
    assert len(held) >= 15
    assert max(paced.tally.latencies) >= 0.25
