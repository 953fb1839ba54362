"""The opt-in timeline of a test run (tests/support/timeline.py): a line per test with its
worker, times and CPU when ONWATCH_TEST_TIMELINE names a file, nothing without it, and
a summary that finds the idle workers and the test that ended the pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support import timeline

# Reads no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


class Item:
    nodeid = "tests/core/test_x.py::test_y"


def ran(item: Any) -> None:
    """The plugin's wrapper around one test's run, driven as pytest drives it."""
    wrapper = timeline.pytest_runtest_protocol(cast(pytest.Item, item))
    next(wrapper)
    with pytest.raises(StopIteration):
        next(wrapper)


def test_a_line_per_test_when_asked_and_nothing_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "timeline"
    monkeypatch.delenv(timeline.VARIABLE, raising=False)
    ran(Item())
    assert not path.exists()
    monkeypatch.setenv(timeline.VARIABLE, str(path))
    monkeypatch.setenv("ONWATCH_TEST_PASS", "sqlite")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    ran(Item())
    [line] = timeline.read(path)
    assert (line["pass"], line["worker"], line["test"]) == ("sqlite", "gw2", Item.nodeid)
    assert line["end"] >= line["start"] and line["cpu"] >= 0


def test_the_summary_names_the_idle_share_the_workers_and_the_last_test(tmp_path: Path) -> None:
    lines = [
        {"pass": "sqlite", "worker": "gw0", "test": "a", "start": 0, "end": 90, "cpu": 9},
        {"pass": "sqlite", "worker": "gw1", "test": "b", "start": 0, "end": 30, "cpu": 3},
        {"pass": "sqlite", "worker": "gw1", "test": "c", "start": 30, "end": 60, "cpu": 3},
        {"pass": "sqlite", "worker": "main", "event": "end", "at": 91, "cpu": 1},
    ]
    path = tmp_path / "timeline"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    said = timeline.summary(timeline.read(path))
    # 150 s of tests in 2 workers x 90 s: a sixth idle.
    assert said.startswith("timeline sqlite: 90 s, CPU 15 s, idle 17% of worker time; ")
    assert "busiest gw0 90 s, idlest gw1 60 s; last to end a (90 s, from +0 s)" in said
