"""STAND-IN for the bubblewrap sandbox (engineer "sandbox" builds the real one with this
interface; the integrator replaces this file). Runs the step as a plain process in a
session of its own, with its time limit, output to `on_output` in chunks as it comes.
It isolates nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    seconds: float = 1800.0
    memory_bytes: int = 2 * 1024**3
    processes: int = 512
    output_bytes: int = 50 * 1024**2


@dataclass(frozen=True)
class Step:
    argv: Sequence[str]
    workspace: Path
    env: Mapping[str, str]
    caches: Mapping[str, Path] = field(default_factory=dict)
    limits: Limits = Limits()


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    reason: str | None
    seconds: float
    output_bytes: int


def problem() -> str | None:
    return None


def memory_enforced_by() -> str:
    return "rlimit"


def run(
    step: Step, on_output: Callable[[bytes], None], cancelled: threading.Event | None = None
) -> Outcome:
    started = time.monotonic()
    proc = subprocess.Popen(
        list(step.argv),
        cwd=step.workspace,
        env=dict(step.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    why: list[str] = []
    watcher = threading.Thread(
        target=_watch, args=(proc, step.limits, started, cancelled, stop, why), daemon=True
    )
    watcher.start()
    total = 0
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        total += len(chunk)
        on_output(chunk)
    code = proc.wait()
    stop.set()
    watcher.join()
    seconds = time.monotonic() - started
    if why:
        return Outcome(None, why[0], seconds, total)
    return Outcome(code, None if code == 0 else f"exited with {code}", seconds, total)


def _watch(
    proc: subprocess.Popen[bytes],
    limits: Limits,
    started: float,
    cancelled: threading.Event | None,
    stop: threading.Event,
    why: list[str],
) -> None:
    while not stop.wait(0.1):
        if cancelled is not None and cancelled.is_set():
            why.append("cancelled")
        elif time.monotonic() - started > limits.seconds:
            why.append(f"stopped after {limits.seconds:g} s, the step's time limit")
        else:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
