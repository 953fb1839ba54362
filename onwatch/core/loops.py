"""The worker and scheduler loops: small steps, SIGTERM-aware, one bad row never kills them."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from django.conf import settings
from django.db import close_old_connections, connection

from onwatch.core import hooks, jobs, scheduler, wakeup
from onwatch.core.pool import Pool

log = logging.getLogger("onwatch.loops")


class Stopper:
    """SIGTERM/SIGINT end every loop of the process; each loop idles on a wake-up of its
    own (`waker()`), so one loop taking a wake-up never costs another its own."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._wakers: list[threading.Event] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, finishing", signal.Signals(signum).name)
        self.halt()

    def halt(self) -> None:
        """End every loop: their current step finishes, their idle waits end at once."""
        self.event.set()
        for wake in self._wakers:
            wake.set()

    def waker(self) -> threading.Event:
        """A loop's own wake-up: set it to end that loop's idle wait early."""
        wake = threading.Event()
        self._wakers.append(wake)
        if self.stopping:
            wake.set()
        return wake

    @property
    def stopping(self) -> bool:
        return self.event.is_set()


def forever(
    step: Callable[[], bool],
    idle_seconds: float,
    stopper: Stopper,
    wake: threading.Event | None = None,
) -> None:
    """Call step() until stopped; sleep when it reports no work (or until `wake` is set).
    Errors are logged and the loop backs off instead of dying (the database may be
    restarting)."""
    wake = wake or stopper.waker()
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
            # A wake-up that came while the step ran ends this wait at once: none is lost.
            wake.wait(idle_seconds)
            wake.clear()


# How long a thread of the worker may hold the GIL while another waits for it (Python's
# default: 5 ms). A job's threads wait on processes (git, a step's sandbox) and wake
# briefly at their end; with 5 ms turns each wake waited for whichever thread was setting
# a sandbox up in Python, and a pipeline's 15 ms git clone took 50-80 ms (bench/pipelines.py).
# The web processes take quicker turns still, for their database writer (ingest.writer).
SWITCH_SECONDS = 0.001


def run_worker(stopper: Stopper | None = None) -> None:
    sys.setswitchinterval(SWITCH_SECONDS)
    stopper = stopper or Stopper()
    name = jobs.worker_name()
    hooks.worker_started()
    # A job that ends frees a slot: the next queued job starts then, not a poll later.
    wake = stopper.waker()
    # And so does a job queued by another process of this machine.
    listener = wakeup.Listener(wake)
    pool = Pool(name, settings.JOB_QUEUES, on_free=wake.set)
    slots = ", ".join(f"{queue} {n}" for queue, n in pool.sizes.items())
    log.info("worker %s ready (slots: %s)", name, slots)

    def step() -> bool:
        return pool.fill() > 0

    try:
        forever(step, settings.JOB_POLL_SECONDS, stopper, wake)
    finally:
        if pool.running():
            log.info("waiting for %d running job(s) to finish", pool.running())
        pool.close()
        listener.close()


def run_scheduler(stopper: Stopper | None = None) -> None:
    stopper = stopper or Stopper()
    ready = False

    def step() -> bool:
        # In the step, so a database that is not there yet is retried like any tick.
        nonlocal ready
        if not ready:
            made = scheduler.ensure_builtin()
            log.info("scheduler ready (%d built-in schedules added)", made)
            ready = True
        scheduler.tick()
        return False

    forever(step, settings.SCHEDULER_TICK_SECONDS, stopper)


def run_worker_and_scheduler() -> None:
    """What `onwatch up` runs: the scheduler on a thread of the worker's process. Its tick
    is a few queries a second, not worth a Python and Django of its own (~50 MiB); the
    jobs it makes still wait in their queues for a slot, so nothing changes for them."""
    stopper, died = Stopper(), threading.Event()
    ticking = threading.Thread(target=_scheduler_thread, args=(stopper, died), name="scheduler")
    ticking.start()
    try:
        run_worker(stopper)
    finally:
        stopper.halt()  # the worker may also end on an error of its own
        ticking.join()
    if died.is_set():
        # Exit non-zero: the supervisor starts worker and scheduler again.
        raise SystemExit(1)


# A scheduler loop that ends is started again on its thread after a pause: ending the
# process instead would wait for its running jobs (a two-hour backup), two hours without
# heartbeat checks, escalations or schedules. Only when it keeps ending does the process end.
SCHEDULER_RESTART_PAUSE = 5.0
SCHEDULER_RESTARTS = 5  # at most this many within the window below…
SCHEDULER_RESTART_WINDOW = 600.0  # …seconds, then the process ends


def _scheduler_thread(stopper: Stopper, died: threading.Event) -> None:
    """The scheduler must never stop alone while the worker goes on (no overdue
    heartbeats, escalations or schedules, and nobody told): if its loop ends for any
    reason but a stop, it is started again; if it keeps ending, the whole process ends
    so the supervisor starts it again."""
    ended: list[float] = []
    try:
        while not stopper.stopping:
            _run_scheduler_once(stopper)
            if stopper.stopping:
                return
            now = time.monotonic()
            ended = [t for t in ended if now - t < SCHEDULER_RESTART_WINDOW] + [now]
            if len(ended) > SCHEDULER_RESTARTS:
                log.error(
                    "the scheduler stopped %d times in %.0f s; ending the worker so both "
                    "start again",
                    len(ended),
                    SCHEDULER_RESTART_WINDOW,
                )
                died.set()
                return
            log.warning(
                "the scheduler stopped; starting it again in %.0f s (%d of %d restarts "
                "allowed in %.0f s)",
                SCHEDULER_RESTART_PAUSE,
                len(ended),
                SCHEDULER_RESTARTS,
                SCHEDULER_RESTART_WINDOW,
            )
            stopper.event.wait(SCHEDULER_RESTART_PAUSE)
    finally:
        stopper.halt()  # the worker ends with it: stopping, or a scheduler that gave up


def _run_scheduler_once(stopper: Stopper) -> None:
    try:
        run_scheduler(stopper)
    except BaseException:
        log.exception("the scheduler's loop ended on an error")
    finally:
        connection.close()  # this thread's own; the worker's closes with its process
