"""The supervisor behind `onwatch up`: back-off as plain step() calls with a controllable
clock (real, short-lived child processes), then restarts and stops of a real `onwatch up`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from onwatch.supervisor import (
    MAX_BACKOFF,
    STABLE_SECONDS,
    WAIT_LIMIT,
    Child,
    Supervisor,
    listening,
)
from tests.support.procs import Running, alive, children_pids, isolated, started_pids, wait_http

# Its subject lies outside onwatch's own database (processes: back-off, restarts, stops):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def crashing(code: str = "raise SystemExit(3)") -> Child:
    return Child("crasher", [sys.executable, "-c", code])


def crash_and_step(sup: Supervisor, child: Child, now: float) -> float:
    """Let the running child die, let the supervisor notice at `now`; the restart time."""
    assert child.proc is not None
    child.proc.wait()
    sup.step(now)
    assert child.proc is None and child.restart_at is not None
    return child.restart_at


def test_a_crashed_child_is_restarted_after_a_doubling_back_off() -> None:
    child = crashing()
    sup = Supervisor([child])
    child.start(0.0)
    assert crash_and_step(sup, child, 0.5) == 1.5
    sup.step(1.4)
    assert child.proc is None and child.restarts == 0
    sup.step(1.5)
    assert child.proc is not None and child.restarts == 1
    assert crash_and_step(sup, child, 2.0) == 4.0
    sup.step(4.0)
    assert crash_and_step(sup, child, 4.1) == pytest.approx(8.1)


def test_the_back_off_stops_growing_at_its_maximum() -> None:
    child = crashing()
    sup = Supervisor([child])
    now = 0.0
    child.start(now)
    delays = []
    for _ in range(8):
        now += 0.1
        restart_at = crash_and_step(sup, child, now)
        delays.append(restart_at - now)
        now = restart_at
        sup.step(now)
    assert delays == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30])
    assert max(delays) == MAX_BACKOFF


def test_a_child_that_ran_stably_before_dying_starts_over_at_one_second() -> None:
    child = crashing()
    child.backoff = 16.0
    sup = Supervisor([child])
    child.start(100.0)
    assert crash_and_step(sup, child, 100.0 + STABLE_SECONDS) == 100.0 + STABLE_SECONDS + 1


def test_the_restart_is_logged_with_the_signal_that_killed_the_child(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child = crashing("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    sup = Supervisor([child])
    child.start(0.0)
    with caplog.at_level(logging.INFO, logger="onwatch.up"):
        crash_and_step(sup, child, 0.0)
        sup.step(1.0)
    assert "crasher (pid " in caplog.text
    assert "was killed by SIGKILL; restarting it in 1 s" in caplog.text
    assert "crasher restarting (restart 1)" in caplog.text
    assert child.proc is not None
    child.proc.wait()


def test_nothing_is_restarted_once_stopping() -> None:
    child = crashing()
    sup = Supervisor([child])
    child.start(0.0)
    assert child.proc is not None
    child.proc.wait()
    sup.stopping = True
    sup.step(100.0)
    assert child.restarts == 0 and child.restart_at is None


def sleeper(waits_for: Callable[[], bool]) -> Child:
    return Child("late", [sys.executable, "-c", "import time; time.sleep(60)"], waits_for=waits_for)


def test_a_child_that_waits_starts_once_its_condition_holds() -> None:
    ready = False
    child = sleeper(lambda: ready)
    sup = Supervisor([child])
    sup.begin(0.0)
    sup.step(1.0)
    assert child.proc is None
    ready = True
    sup.step(1.2)
    assert child.proc is not None and child.restarts == 0
    child.proc.kill()
    child.proc.wait()


def test_a_child_that_waits_starts_after_the_wait_limit_whatever_happens() -> None:
    child = sleeper(lambda: False)
    sup = Supervisor([child])
    sup.begin(100.0)
    sup.step(100.0 + WAIT_LIMIT - 0.1)
    assert child.proc is None
    sup.step(100.0 + WAIT_LIMIT)
    assert child.proc is not None
    child.proc.kill()
    child.proc.wait()


def test_listening_is_true_only_while_a_server_accepts_on_the_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not listening("127.0.0.1", port)()
        server.listen()
        assert listening("127.0.0.1", port)()
        assert listening("0.0.0.0", port)()


def test_a_child_killed_with_sigkill_is_restarted_with_back_off(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env, Running(["up"], env) as up:
        wait_http(up.base_url + "/health/", timeout=60)
        up.wait_for("worker started (pid ")
        [first] = started_pids(up, "worker")
        os.kill(first, signal.SIGKILL)
        up.wait_for(f"worker (pid {first}) was killed by SIGKILL; restarting it in 1 s")
        up.wait_for("worker started (pid ", nth=2)
        second = started_pids(up, "worker")[1]
        assert second != first and alive(second)
        os.kill(second, signal.SIGKILL)
        # Died again soon after its restart: the wait doubles.
        up.wait_for(f"worker (pid {second}) was killed by SIGKILL; restarting it in 2 s")
        up.wait_for("worker started (pid ", nth=3)
        wait_http(up.base_url + "/health/")
        assert [len(started_pids(up, name)) for name in ("web", "prober")] == [1, 1]


def test_ctrl_c_stops_every_process_within_10_s(tmp_path: Path) -> None:
    # SIGTERM to `onwatch up` alone is tested in test_up.py; Ctrl+C in a terminal sends
    # SIGINT to the whole process group, children included, and none may be restarted.
    with isolated(tmp_path, migrated=True) as env, Running(["up"], env) as up:
        wait_http(up.base_url + "/health/", timeout=60)
        up.wait_for(" ready", nth=2)  # "worker <name> ready" and "scheduler ready"
        kids = children_pids(up)
        assert len(kids) >= 3 and all(alive(pid) for pid in kids)
        sent = time.monotonic()
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 10
        assert [pid for pid in kids if alive(pid)] == []
        up.wait_for("onwatch.up: stopped")
        assert not any("restarting" in line for line in up.lines)


def test_the_children_stop_when_onwatch_up_itself_is_killed(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env, Running(["up"], env) as up:
        wait_http(up.base_url + "/health/", timeout=60)
        up.wait_for(" ready", nth=2)
        kids = children_pids(up)
        os.kill(up.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in kids if alive(pid)] == []
