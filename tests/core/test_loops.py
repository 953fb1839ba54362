"""The worker and scheduler loops of one process (`onwatch up` runs both in the worker)."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from django.db import OperationalError

from onwatch.core import loops, scheduler


def test_a_scheduler_whose_first_step_fails_tries_again_instead_of_ending(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The database may not answer when the process starts: the built-in schedules are
    made on a later try, and the ticks go on."""
    settings.SCHEDULER_TICK_SECONDS = 0.01
    tries: list[str] = []
    stopper = loops.Stopper()

    def ensure_builtin() -> int:
        tries.append("ensure")
        if len(tries) == 1:
            raise OperationalError("database is locked")
        return 0

    def tick() -> None:
        tries.append("tick")
        if tries.count("tick") == 2:
            stopper.halt()

    monkeypatch.setattr(scheduler, "ensure_builtin", ensure_builtin)
    monkeypatch.setattr(scheduler, "tick", tick)
    ran = threading.Thread(target=loops.run_scheduler, args=(stopper,))
    ran.start()
    ran.join(10)
    assert not ran.is_alive()
    assert tries == ["ensure", "ensure", "tick", "tick"]


def test_a_scheduler_that_dies_is_started_again_while_the_worker_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ending the process would first wait for its running jobs (a two-hour backup): the
    scheduler's loop is started again on its thread instead, after a pause, and says so."""
    monkeypatch.setattr(loops, "SCHEDULER_RESTART_PAUSE", 0.01)
    worker_running = threading.Event()
    starts: list[bool] = []  # whether the worker was running at each start

    def run_scheduler(stopper: loops.Stopper) -> None:
        starts.append(worker_running.wait(5) and not stopper.stopping)
        if len(starts) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        stopper.halt()  # the second one runs until the process is stopped

    def run_worker(stopper: loops.Stopper) -> None:
        worker_running.set()
        stopper.waker().wait(10)  # as a worker with a long job waits
        worker_running.clear()

    monkeypatch.setattr(loops, "run_scheduler", run_scheduler)
    monkeypatch.setattr(loops, "run_worker", run_worker)
    with caplog.at_level("WARNING", logger="onwatch.loops"):
        loops.run_worker_and_scheduler()  # no SystemExit: nothing had to start again
    assert starts == [True, True]
    said = [r.getMessage() for r in caplog.records]
    assert any("server closed the connection" in (r.exc_text or "") for r in caplog.records)
    assert [m for m in said if "starting it again" in m] == [
        "the scheduler stopped; starting it again in 0 s (1 of 5 restarts allowed in 600 s)"
    ]


def test_the_worker_process_ends_when_its_scheduler_keeps_dying(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler that dies again and again must not leave a worker running without it:
    after the restarts allowed in the window, the process exits non-zero (the supervisor
    restarts it) once the worker has stopped."""
    monkeypatch.setattr(loops, "SCHEDULER_RESTART_PAUSE", 0.01)
    monkeypatch.setattr(loops, "SCHEDULER_RESTARTS", 2)
    worker_stopped = threading.Event()
    starts: list[int] = []

    def run_scheduler(stopper: loops.Stopper) -> None:
        starts.append(1)
        raise MemoryError("as anything the loop itself does not catch")

    def run_worker(stopper: loops.Stopper) -> None:
        wake = stopper.waker()
        wake.wait(10)
        if stopper.stopping:
            worker_stopped.set()

    monkeypatch.setattr(loops, "run_scheduler", run_scheduler)
    monkeypatch.setattr(loops, "run_worker", run_worker)
    with caplog.at_level("WARNING", logger="onwatch.loops"), pytest.raises(SystemExit) as ended:
        loops.run_worker_and_scheduler()
    assert ended.value.code == 1
    assert worker_stopped.is_set()
    assert len(starts) == 3
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "starting it again" in m]) == 2
    assert "the scheduler stopped 3 times in 600 s; ending the worker so both start again" in said


def test_a_wake_up_for_one_loop_is_never_taken_by_another() -> None:
    """Worker and scheduler idle side by side: a freed job slot wakes the worker even
    while the scheduler is idle too."""
    stopper = loops.Stopper()
    worker_wake, scheduler_wake = stopper.waker(), stopper.waker()
    worker_wake.set()  # a slot freed
    scheduler_wake.wait(0.01)
    scheduler_wake.clear()  # the scheduler's idle wait ends and clears its own
    assert worker_wake.is_set()
    stopper.halt()
    assert scheduler_wake.is_set() and stopper.stopping


@pytest.mark.django_db
def test_the_worker_takes_quick_turns_at_the_gil() -> None:
    """Its jobs' threads wake at a process's end to read it; with Python's 5 ms turns each
    wake waited behind the thread setting a sandbox up (loops.SWITCH_SECONDS)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's own, whatever this process set before
    stopper = loops.Stopper()
    stopper.halt()
    try:
        loops.run_worker(stopper)
        assert sys.getswitchinterval() == pytest.approx(loops.SWITCH_SECONDS)
    finally:
        sys.setswitchinterval(before)
