"""Job handlers of core itself: harmless probes for self-checks and for the tests that run
real workers (each run leaves a line naming its worker, so a double run shows)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from django.conf import settings
from django.utils import timezone

from onwatch.core.jobs import JobContext, JobFailed, age_out_logs, handler

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
    """Holds a worker for payload["seconds"]: a stand-in for a long backup or drill. With
    payload["program"], the wait is a `sleep` program it starts, as a backup starts restic
    (proves a cancel stops a job's processes); either way a cancel ends it early."""
    seconds = min(float(ctx.job.payload.get("seconds", 1)), MAX_SLEEP_SECONDS)
    ctx.on_end(lambda: ctx.log("cleaned up"))
    if ctx.job.payload.get("program"):
        child = subprocess.Popen(["sleep", f"{seconds:g}"])
        ctx.log(f"sleeping {seconds:g} s in process {child.pid}")
        if child.wait() != 0:
            raise JobFailed(f"the sleep program ended with {child.returncode}")
    else:
        ctx.log(f"sleeping {seconds:g} s")
        ctx.wait(seconds)
    return {**_ran(ctx), "slept": seconds}


@handler("core.age_out_logs")
def age_out_job_logs(ctx: JobContext) -> dict[str, Any]:
    """The nightly clean-up of old jobs' log lines (settings.JOB_LOG_DAYS)."""
    removed = age_out_logs(timezone.now(), settings.JOB_LOG_DAYS)
    days = settings.JOB_LOG_DAYS
    ctx.log(f"removed the log lines of {removed} job(s) ended over {days} days ago")
    return {"jobs": removed, "days": days}
