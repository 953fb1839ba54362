"""`onwatch up`: run web, worker (with the scheduler on a thread) and prober as children,
restart the ones that crash (with back-off) and stop them all on SIGTERM or SIGINT."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

log = logging.getLogger("onwatch.up")

# A child that ran this long before it died counts as healthy: its back-off starts over.
STABLE_SECONDS = 30.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STOP_GRACE = 8.0
PR_SET_PDEATHSIG = 1
PARENT_VARIABLE = "ONWATCH_SUPERVISOR_PID"
# A child that waits for another starts once that one is up or this long after start-up,
# whichever comes first: waiting must never keep a part of onwatch from running.
WAIT_LIMIT = 10.0


def follow_parent() -> None:
    """In a child of `onwatch up`: have the kernel send SIGTERM when the supervisor dies
    (SIGKILL, OOM killer), so no orphan keeps the port or holds jobs."""
    parent = os.environ.pop(PARENT_VARIABLE, "")
    if parent.isdigit():
        die_with_parent(int(parent))


def die_with_parent(parent: int) -> None:
    """Get SIGTERM from the kernel when the process `parent` (ours) dies."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)  # it died before the request was in place


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Process(Protocol):
    """What the supervisor uses of a child: a subprocess.Popen, or a forked web worker
    (onwatch/prefork.py)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: Process | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    restarts: int = 0
    # Started only once this holds (see WAIT_LIMIT); None: at once.
    waits_for: Callable[[], bool] | None = None
    waiting: bool = False
    # Starts the child instead of running argv (a fork of this process, say).
    spawn: Callable[[], Process] | None = None
    log: logging.Logger = log

    def start(self, now: float) -> None:
        if self.spawn is not None:
            self.proc = self.spawn()
        else:
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, PARENT_VARIABLE: str(os.getpid())}
            )
        self.started = now
        self.restart_at = None
        self.log.info("%s started (pid %d)", self.name, self.proc.pid)

    def reap(self, now: float) -> bool:
        """True when the child has exited: schedule its restart after the back-off."""
        code = self.proc.poll() if self.proc is not None else None
        if self.proc is None or code is None:
            return False
        if now - self.started >= STABLE_SECONDS:
            self.backoff = FIRST_BACKOFF
        self.restart_at = now + self.backoff
        self.log.warning(
            "%s (pid %d) %s; restarting it in %.0f s",
            self.name,
            self.proc.pid,
            describe_exit(code),
            self.backoff,
        )
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        self.proc = None
        return True


@dataclass
class Supervisor:
    children: list[Child]
    stopping: bool = False
    clock: Callable[[], float] = field(default=time.monotonic)
    began: float = 0.0
    log: logging.Logger = log

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_signal)
        self.begin(self.clock())
        while not self.stopping:
            self.step(self.clock())
            time.sleep(0.2)
        return self.stop_all()

    def begin(self, now: float) -> None:
        self.began = now
        for child in self.children:
            child.waiting = child.waits_for is not None
            if not child.waiting:
                child.start(now)

    def step(self, now: float) -> None:
        for child in self.children:
            # On Ctrl+C the children get SIGINT too and exit: that is no crash to restart.
            if self.stopping:
                return
            if child.waiting:
                self.start_when_due(child, now)
                continue
            child.reap(now)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.log.warning("%s restarting (restart %d)", child.name, child.restarts)
                child.start(now)

    def start_when_due(self, child: Child, now: float) -> None:
        assert child.waits_for is not None
        if now - self.began >= WAIT_LIMIT or child.waits_for():
            child.waiting = False
            child.start(now)

    def stop_all(self) -> int:
        self.log.info("stopping")
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()
        self.log.info("stopped")
        return 0


def listening(host: str, port: int) -> Callable[[], bool]:
    """Whether a server accepts connections on host:port (a wildcard: on this machine)."""
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104

    def check() -> bool:
        try:
            socket.create_connection((target, port), timeout=0.5).close()
        except OSError:
            return False
        return True

    return check


def children(web: tuple[str, int] | None = None) -> list[Child]:
    """Three processes: each costs a Python and Django (~50 MiB) of its own, so the
    scheduler, which only turns schedules into jobs, runs on a thread of the worker.
    Given web's address, the prober starts once web listens: on 2 cores three starting
    processes would slow the pages, and a check made a second later costs nothing."""
    me = [sys.executable, "-m", "onwatch"]
    return [
        Child("web", [*me, "web"]),
        Child("worker", [*me, "worker", "--with-scheduler"]),
        Child("prober", [*me, "prober"], waits_for=listening(*web) if web else None),
    ]


def main() -> None:
    """`python -m onwatch.supervisor`: what `onwatch up` becomes once the database is ready.
    It loads only the standard library, so the process that idles all day stays small."""
    logging.basicConfig(
        level=os.environ.get("ONWATCH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # `onwatch up` passes web's address: `python -m onwatch.supervisor HOST PORT`.
    web = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) == 3 else None
    raise SystemExit(Supervisor(children(web)).run())


if __name__ == "__main__":
    main()
