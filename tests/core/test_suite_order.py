"""The order tests run in (tests/support/order.py): the slowest first, those of unknown
time after them in their own order, and never a test in a rolled-back transaction after
one that flushes the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support import order

# Reads no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


class Item:
    """What the ordering reads of a collected test."""

    def __init__(self, nodeid: str, transaction: bool | None = None) -> None:
        self.nodeid = nodeid
        self.marker = (
            None if transaction is None else pytest.mark.django_db(transaction=transaction)
        )
        self.fixturenames: list[str] = []

    def get_closest_marker(self, name: str) -> Any:
        return self.marker.mark if self.marker is not None and name == "django_db" else None


def ids(items: list[pytest.Item]) -> list[str]:
    return [i.nodeid for i in items]


def test_the_files_of_the_slowest_go_first_whole_and_the_unknown_keep_their_order() -> None:
    names = ["a.py::1", "b.py::1", "b.py::slow", "c.py::1", "d.py::slower", "d.py::2"]
    items = cast(list[pytest.Item], [Item(n) for n in names])
    known = {"b.py::slow": 40.0, "d.py::slower": 90.0, "e.py::gone": 99.0}  # gone: renamed
    assert ids(order.ordered(items, known)) == [
        "d.py::slower",
        "d.py::2",
        "b.py::1",
        "b.py::slow",
        "a.py::1",
        "c.py::1",
    ]


def test_tests_rolled_back_stay_before_those_that_flush_the_database() -> None:
    made = [Item("a.py::flushes", transaction=True), Item("b.py::rolled back", transaction=False)]
    made += [Item("c.py::no database"), Item("d.py::slow, flushes", transaction=True)]
    items = cast(list[pytest.Item], made)
    known = {"d.py::slow, flushes": 90.0, "a.py::flushes": 5.0}
    assert ids(order.ordered(items, known)) == [
        "b.py::rolled back",
        "d.py::slow, flushes",
        "a.py::flushes",
        "c.py::no database",
    ]


def test_the_durations_file_is_read_and_made_from_a_timeline(tmp_path: Path) -> None:
    timeline = tmp_path / "timeline"
    lines = [
        {"pass": "sqlite", "worker": "gw0", "test": "t::slow", "start": 0.0, "end": 30.0},
        {"pass": "postgresql", "worker": "gw1", "test": "t::slow", "start": 5.0, "end": 45.5},
        {"pass": "sqlite", "worker": "gw1", "test": "t::quick", "start": 0.0, "end": 0.2},
    ]
    timeline.write_text("".join(json.dumps(line) + "\n" for line in lines))
    made = tmp_path / "durations.txt"
    made.write_text(order.listed(timeline))
    assert order.durations(made) == {"t::slow": 40.5}  # its slower pass; quick ones left out
    assert order.durations(tmp_path / "none.txt") == {}


def test_the_checked_in_durations_file_reads() -> None:
    known = order.durations()
    assert known and all(seconds >= order.LISTED_FROM for seconds in known.values())
