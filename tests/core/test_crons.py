from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from onwatch.core.crons import next_after, validate_schedule

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_the_next_time_is_strictly_after_the_given_one() -> None:
    assert next_after("0 3 * * *", "UTC", utc(2025, 1, 10, 3)) == utc(2025, 1, 11, 3)


def test_0300_in_prague_is_0200_utc_in_winter_and_0100_utc_in_summer() -> None:
    assert next_after("0 3 * * *", "Europe/Prague", utc(2025, 1, 10, 12)) == utc(2025, 1, 11, 2)
    assert next_after("0 3 * * *", "Europe/Prague", utc(2025, 7, 10, 12)) == utc(2025, 7, 11, 1)


def test_a_time_skipped_by_the_spring_change_runs_once_right_after_it() -> None:
    # 02:30 does not exist in Prague on 30 March 2025: clocks go from 02:00 to 03:00.
    assert next_after("30 2 * * *", "Europe/Prague", utc(2025, 3, 29, 12)) == utc(2025, 3, 30, 1)


def test_a_time_repeated_by_the_autumn_change_runs_once() -> None:
    # 02:30 happens twice in Prague on 26 October 2025; the job runs at the first one.
    first = next_after("30 2 * * *", "Europe/Prague", utc(2025, 10, 25, 12))
    assert first == utc(2025, 10, 26, 0, 30)
    assert next_after("30 2 * * *", "Europe/Prague", first) == utc(2025, 10, 27, 1, 30)


@pytest.mark.parametrize("expr", ["*/5 * * * *", "0 3 * * 1-5", "15 2 1 * *", "0 0 29 2 *"])
def test_ordinary_expressions_are_accepted(expr: str) -> None:
    validate_schedule(expr, "Europe/Prague")


@pytest.mark.parametrize(
    ("expr", "tz", "says"),
    [
        ("*/0 * * * *", "UTC", "(bad minute)"),
        ("0 25 * * *", "UTC", "(bad hour)"),
        ("@daily", "UTC", "is not a cron expression; use five fields"),
        ("", "UTC", "is not a cron expression"),
        ("0 3 * * *", "CEST", "'CEST' is not a time zone"),
        ("0 3 * * *", "../../etc/passwd", "is not a time zone"),
    ],
)
def test_bad_expressions_and_zones_say_what_to_write(expr: str, tz: str, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        next_after(expr, tz, utc(2025, 1, 1, 0))
    assert says in refused.value.messages[0]
