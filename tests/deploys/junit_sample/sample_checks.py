"""A tiny test suite that tests/deploys/test_junit.py runs with `pytest --junitxml`, for a
report written by the real pytest: one test of each outcome. onwatch's own test run does
not collect it (its name does not start with test_)."""

from __future__ import annotations

import pytest


@pytest.fixture
def database() -> None:
    raise RuntimeError("database not reachable")


def test_passes() -> None:
    assert 1 + 1 == 2


def test_fails() -> None:
    assert 1 + 1 == 3, "arithmetic is broken"


def test_errors(database: None) -> None:
    pass


@pytest.mark.skip(reason="needs a GPU")
def test_skipped() -> None:
    pass
