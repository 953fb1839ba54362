"""The worker and scheduler loops of one process (`onwatch up` runs both in the worker)."""

from __future__ import annotations

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


def test_the_worker_process_ends_with_its_scheduler_so_both_are_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduler thread that dies must not leave a worker running without it: the
    process exits non-zero (the supervisor restarts it) once the worker has stopped."""
    worker_stopped = threading.Event()

    def run_scheduler(stopper: loops.Stopper) -> None:
        raise MemoryError("as anything the loop itself does not catch")

    def run_worker(stopper: loops.Stopper) -> None:
        wake = stopper.waker()
        wake.wait(10)
        if stopper.stopping:
            worker_stopped.set()

    monkeypatch.setattr(loops, "run_scheduler", run_scheduler)
    monkeypatch.setattr(loops, "run_worker", run_worker)
    with pytest.raises(SystemExit) as ended:
        loops.run_worker_and_scheduler()
    assert ended.value.code == 1
    assert worker_stopped.is_set()


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
