"""The files of the slowest tests first: a pass's workers then end together instead of one
running a 90-second test alone at the end while the others idle.

tests/support/durations.txt names the tests that take seconds (measured with
tests.support.timeline, their slowest pass); files with none of them keep their
collection order after the others. A test missing from the file (new, renamed) only runs
in that later part: nothing is ever left out. With xdist, `--maxschedchunk=1`
(pyproject's addopts) hands the tests out one or two at a time in this order, rather
than a quarter of each worker's share at once, which would give the first worker every
slow test.

Refresh the file after adding slow tests:
  ONWATCH_TEST_TIMELINE=/tmp/t scripts/test && python -m tests.support.order /tmp/t
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.txt")
# Below this a test's place hardly matters, and the file stays short enough to read.
LISTED_FROM = 5.0


def durations(path: Path = DURATIONS) -> dict[str, float]:
    """Seconds by test id, from lines `<seconds> <test id>` (# starts a comment)."""
    found: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            seconds, test = line.split(maxsplit=1)
            found[test] = float(seconds)
    return found


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After pytest-django's order (tests in a rolled-back transaction before those that
    flush the database at their end, as Django orders them), which it keeps: a flush
    would empty what migrations put in the tables under a later rolled-back test."""
    items[:] = ordered(items, durations())


def ordered(items: list[pytest.Item], known: dict[str, float]) -> list[pytest.Item]:
    """Whole files, the one with the slowest test first, each in its own order: a module
    fixture (an sshd, a browser) then starts no more often than before. sorted() keeps
    the collection order among files of the same time (those `known` does not name)."""
    slowest: dict[str, float] = defaultdict(float)
    for item in items:
        where = _file(item)
        slowest[where] = max(slowest[where], known.get(item.nodeid, 0.0))
    return sorted(items, key=lambda i: (not _rolled_back(i), -slowest[_file(i)]))


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _rolled_back(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    if marker is not None and marker.kwargs.get("transaction"):
        return False
    names = getattr(item, "fixturenames", ())
    if "transactional_db" in names or "live_server" in names:
        return False
    return marker is not None or "db" in names


def listed(timeline: Path) -> str:
    """durations.txt's text from a timeline: each test's longest run in any pass."""
    from tests.support.timeline import read, tests_of

    longest: dict[str, float] = defaultdict(float)
    for line in tests_of(read(timeline)):
        longest[line["test"]] = max(longest[line["test"]], line["end"] - line["start"])
    slow = sorted(((s, t) for t, s in longest.items() if s >= LISTED_FROM), reverse=True)
    head = "# Seconds per test, slowest first (tests.support.order); refresh as it says.\n"
    return head + "".join(f"{s:.1f} {t}\n" for s, t in slow)


if __name__ == "__main__":
    DURATIONS.write_text(listed(Path(sys.argv[1])))
