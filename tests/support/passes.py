"""Which of scripts/test's two passes runs a test marked `once`.

A `once` test is about something other than onwatch's own database, so one pass is enough;
scripts/test names its pass in ONWATCH_TEST_PASS ("sqlite" or "postgresql"), and the
PostgreSQL pass takes some of the `once` tests' files (a whole file at a time: its module
fixtures start once). They all ran in the SQLite pass before, which then ran 7
minutes after the PostgreSQL one had ended with its workers idle; half of them made the
PostgreSQL pass the longer one by a third while it had two workers to the SQLite pass's
three. With three workers each (scripts/test), half is its share again. Without the
variable (pytest by hand) every test runs.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

PASSES = ("sqlite", "postgresql")
# Percent of the `once` files the PostgreSQL pass takes: those whose hash is odd and below
# twice that, so that each ran on PostgreSQL when half went there (crc % 2), and passed.
# With two PostgreSQL workers 30 evened the passes; with three (as many as SQLite's),
# 50: replayed from a run's timeline (tests.support.timeline, a loaded machine), the
# passes then take 2,120 s and 2,230 s of 3 workers each, against the 2,560 s and 2,710 s
# that run took with 30 on 3 + 2 workers.
POSTGRESQL_SHARE = 50
_ROOT = Path(__file__).resolve().parents[2]


def pass_of(path: Path) -> str:
    """The pass a `once` test file runs in: fixed by its path, so a file never moves
    between runs unless it is renamed."""
    name = path.resolve().relative_to(_ROOT).as_posix()
    hashed = zlib.crc32(name.encode()) % 100
    return "postgresql" if hashed % 2 and hashed < 2 * POSTGRESQL_SHARE else "sqlite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.environ.get("ONWATCH_TEST_PASS", "")
    if here not in PASSES:
        return
    elsewhere = [i for i in items if i.get_closest_marker("once") and pass_of(i.path) != here]
    if elsewhere:
        gone = set(map(id, elsewhere))
        items[:] = [i for i in items if id(i) not in gone]
        config.hook.pytest_deselected(items=elsewhere)
