"""Stopping the processes a job started. Jobs run on threads of one worker process, so
"the job's children" are the children of its thread: Linux lists them per thread in
/proc/self/task/<tid>/children, and each child's own children the same way. Handlers need
no special way to start programs for a cancel to reach them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

GRACE_SECONDS = 3.0


def _children_of(pid: int, task: int | None = None) -> list[int]:
    tasks = [Path(f"/proc/{pid}/task/{task}")] if task else Path(f"/proc/{pid}/task").glob("*")
    found: list[int] = []
    for t in tasks:
        with contextlib.suppress(OSError):
            found += [int(p) for p in (t / "children").read_text().split()]
    return found


def descendants(thread_id: int) -> list[int]:
    """Every process below the given thread of this process, parents before children."""
    found = _children_of(os.getpid(), thread_id)
    for pid in found:  # grows while it is walked: children's children join the end
        found += [c for c in _children_of(pid) if c not in found]
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # A child that leads its own process group (start_new_session) takes the group
        # along: helpers it started there may not show as its children any more.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def stop(thread_id: int, grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM every process the thread started (a tool may clean up, e.g. restic removes
    its lock), SIGKILL those still there after `grace` seconds. Returns the pids."""
    pids = descendants(thread_id)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids
