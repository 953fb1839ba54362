"""An opt-in timeline of a test run, to see where its time goes: idle workers, the tail
(the last tests, run while the other workers have nothing left), each test's CPU.

With ONWATCH_TEST_TIMELINE=/some/file, every pytest process of the run (each xdist
worker, both passes of scripts/test) appends one JSON line per test to that file: its
pass, worker, test id, start and end (seconds since the epoch) and the CPU its process
spent meanwhile, children it waited for included (onwatch, restic, sshd it started).
A line per worker at its start and end shows the time it spent on neither.
`python -m tests.support.timeline FILE` sums it up. Off (and free) without the variable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

VARIABLE = "ONWATCH_TEST_TIMELINE"


def _cpu() -> float:
    used = os.times()
    return used.user + used.system + used.children_user + used.children_system


def _write(line: dict[str, Any]) -> None:
    """One line, appended whole: the run's processes share the file (O_APPEND writes of
    a few hundred bytes land as one)."""
    path = os.environ.get(VARIABLE)
    if not path:
        return
    line = {"pass": os.environ.get("ONWATCH_TEST_PASS", ""), "worker": _worker(), **line}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_sessionstart(session: pytest.Session) -> None:
    _write({"event": "start", "at": time.time(), "cpu": _cpu()})


def pytest_sessionfinish(session: pytest.Session) -> None:
    _write({"event": "end", "at": time.time(), "cpu": _cpu()})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    if not os.environ.get(VARIABLE):
        yield
        return
    start, cpu = time.time(), _cpu()
    yield
    end = time.time()
    _write({"test": item.nodeid, "start": start, "end": end, "cpu": round(_cpu() - cpu, 3)})


# --- reading it -------------------------------------------------------------------------


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tests_of(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "test" in line]


def summary(lines: list[dict[str, Any]]) -> str:
    """One line per pass: its span, the busiest and idlest worker, the share of worker
    time spent on no test, and the last test to end."""
    by_pass: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in tests_of(lines):
        by_pass[line["pass"] or "-"].append(line)
    return "\n".join(_pass_summary(name, tests) for name, tests in sorted(by_pass.items()))


def _pass_summary(name: str, tests: list[dict[str, Any]]) -> str:
    first, last = min(t["start"] for t in tests), max(t["end"] for t in tests)
    busy: dict[str, float] = defaultdict(float)
    for t in tests:
        busy[t["worker"]] += t["end"] - t["start"]
    span = last - first
    idle = 1 - sum(busy.values()) / (span * len(busy)) if span else 0.0
    ending = max(tests, key=lambda t: t["end"])
    most, least = max(busy, key=busy.__getitem__), min(busy, key=busy.__getitem__)
    cpu = sum(t["cpu"] for t in tests)
    return (
        f"timeline {name}: {span:.0f} s, CPU {cpu:.0f} s, idle {idle:.0%} of worker time; "
        f"busiest {most} {busy[most]:.0f} s, idlest {least} {busy[least]:.0f} s; "
        f"last to end {ending['test']} ({ending['end'] - ending['start']:.0f} s, "
        f"from +{ending['start'] - first:.0f} s)"
    )


if __name__ == "__main__":
    print(summary(read(Path(sys.argv[1]))))
