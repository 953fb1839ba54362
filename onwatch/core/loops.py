"""The worker and scheduler loops: small steps, SIGTERM-aware, one bad row never kills them."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from django.conf import settings
from django.db import close_old_connections, connection

from onwatch.core import jobs, scheduler
from onwatch.core.pool import Pool

log = logging.getLogger("onwatch.loops")


class Stopper:
    def __init__(self) -> None:
        self.event = threading.Event()
        self._wake = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, finishing", signal.Signals(signum).name)
        self.event.set()
        self._wake.set()

    def wake(self) -> None:
        """End the current idle wait early: there may be work now (a slot freed)."""
        self._wake.set()

    def idle(self, seconds: float) -> None:
        # A wake that came while the loop was busy ends this wait at once: none is lost.
        self._wake.wait(seconds)
        self._wake.clear()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()


def forever(step: Callable[[], bool], idle_seconds: float, stopper: Stopper) -> None:
    """Call step() until stopped; sleep when it reports no work. Errors are logged and the
    loop backs off instead of dying (the database may be restarting)."""
    failures = 0
    while not stopper.stopping:
        close_old_connections()
        try:
            busy = step()
            failures = 0
        except Exception:
            failures += 1
            log.exception("loop step failed (%d in a row)", failures)
            busy = False
        if failures:
            stopper.event.wait(idle_seconds * (min(failures, 5) + 1))  # backing off
        elif not busy:
            stopper.idle(idle_seconds)


def run_worker(stopper: Stopper | None = None) -> None:
    stopper = stopper or Stopper()
    name = jobs.worker_name()
    # A job that ends frees a slot: the next queued job starts then, not a poll later.
    pool = Pool(name, settings.JOB_QUEUES, on_free=stopper.wake)
    slots = ", ".join(f"{queue} {n}" for queue, n in pool.sizes.items())
    log.info("worker %s ready (slots: %s)", name, slots)

    def step() -> bool:
        return pool.fill() > 0

    try:
        forever(step, settings.JOB_POLL_SECONDS, stopper)
    finally:
        if pool.running():
            log.info("waiting for %d running job(s) to finish", pool.running())
        pool.close()


def run_scheduler(stopper: Stopper | None = None) -> None:
    stopper = stopper or Stopper()
    made = scheduler.ensure_builtin()
    log.info("scheduler ready (%d built-in schedules added)", made)

    def step() -> bool:
        scheduler.tick()
        return False

    forever(step, settings.SCHEDULER_TICK_SECONDS, stopper)


def run_worker_and_scheduler() -> None:
    """What `onwatch up` runs: the scheduler on a thread of the worker's process. Its tick
    is a few queries a second, not worth a Python and Django of its own (~50 MiB); the
    jobs it makes still wait in their queues for a slot, so nothing changes for them."""
    stopper = Stopper()
    ticking = threading.Thread(target=_scheduler_thread, args=(stopper,), name="scheduler")
    ticking.start()
    try:
        run_worker(stopper)
    finally:
        stopper.event.set()  # the worker may also end on an error of its own
        ticking.join()


def _scheduler_thread(stopper: Stopper) -> None:
    try:
        run_scheduler(stopper)
    finally:
        connection.close()  # this thread's own; the worker's closes with its process
