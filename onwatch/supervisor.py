"""`onwatch up`: run web, worker and scheduler as children, restart the ones that crash
(with back-off) and stop them all on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("onwatch.up")

# A child that ran this long before it died counts as healthy: its back-off starts over.
STABLE_SECONDS = 30.0
MAX_BACKOFF = 30.0
STOP_GRACE = 8.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env={**os.environ, "ONWATCH_CHILD": "1"})
        self.started = time.monotonic()
        self.restart_at = None
        log.info("%s started (pid %d)", self.name, self.proc.pid)


@dataclass
class Supervisor:
    children: list[Child]
    stopping: bool = False
    clock: float = field(default_factory=time.monotonic)

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_signal)
        for child in self.children:
            child.start()
        while not self.stopping:
            self.step(time.monotonic())
            time.sleep(0.2)
        return self.stop_all()

    def step(self, now: float) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                if now - child.started >= STABLE_SECONDS:
                    child.backoff = 1.0
                child.restart_at = now + child.backoff
                log.warning(
                    "%s exited with code %s; restarting in %.0f s", child.name, code, child.backoff
                )
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
                child.proc = None
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start()

    def stop_all(self) -> int:
        log.info("stopping")
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()
        log.info("stopped")
        return 0


def children() -> list[Child]:
    me = [sys.executable, "-m", "onwatch"]
    return [Child(name, [*me, name]) for name in ("web", "worker", "scheduler")]
