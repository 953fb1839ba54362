"""Job handlers of core itself: harmless probes for self-checks and for the tests that run
real workers (each run leaves a line naming its worker, so a double run shows)."""

from __future__ import annotations

import os
import time
from typing import Any

from onwatch.core.jobs import JobContext, handler

MAX_SLEEP_SECONDS = 3600.0


def _ran(ctx: JobContext) -> dict[str, Any]:
    ctx.log(f"ran on {ctx.job.worker}")
    return {"worker": ctx.job.worker, "pid": os.getpid()}


@handler("core.noop")
def noop(ctx: JobContext) -> dict[str, Any]:
    """Does nothing but say where it ran: proves a worker takes jobs."""
    return _ran(ctx)


@handler("core.sleep", queue="long")
def sleep(ctx: JobContext) -> dict[str, Any]:
    """Holds a worker for payload["seconds"]: a stand-in for a long backup or drill."""
    seconds = min(float(ctx.job.payload.get("seconds", 1)), MAX_SLEEP_SECONDS)
    ctx.log(f"sleeping {seconds:g} s")
    time.sleep(seconds)
    return {**_ran(ctx), "slept": seconds}
