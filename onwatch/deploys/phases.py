"""Where a pipeline's time goes besides its commands: checkout, each step's sandbox and
network set-up and teardown, what onwatch records. The worker logs them at DEBUG
(ONWATCH_LOG_LEVEL=DEBUG), one line per pipeline, for `bench/pipelines.py --phases`.

Only the thread running the pipeline records (a context variable): the same sandbox
code run for a release build or the sandbox's trial records nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("onwatch.deploys.phases")
PREFIX = "phases of pipeline #"

_seconds: ContextVar[dict[str, float] | None] = ContextVar("phases", default=None)
_prefix: ContextVar[str] = ContextVar("phases prefix", default="")
OVERLAPPED = "overlapped: "


@contextmanager
def recording(seconds: dict[str, float] | None = None) -> Iterator[dict[str, float]]:
    """Phases timed in this thread until the end of the block, name -> seconds (summed
    over the steps for a phase that each step has), into `seconds` when given."""
    seconds = {} if seconds is None else seconds
    token = _seconds.set(seconds)
    try:
        yield seconds
    finally:
        _seconds.reset(token)


@contextmanager
def overlapped() -> Iterator[None]:
    """Phases timed in this block ran beside the pipeline's own (in a thread of their own,
    in a context copied from it): named with OVERLAPPED, they are not on its path."""
    token = _prefix.set(OVERLAPPED)
    try:
        yield
    finally:
        _prefix.reset(token)


@contextmanager
def timed(name: str) -> Iterator[None]:
    seconds = _seconds.get()
    if seconds is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        name = _prefix.get() + name
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started


def report(pipeline_id: int, seconds: dict[str, float]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        rounded = {name: round(s, 4) for name, s in seconds.items()}
        log.debug("%s%s %s", PREFIX, pipeline_id, json.dumps(rounded))
