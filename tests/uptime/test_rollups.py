"""History that stays small: hourly and daily rollups, retention, and uptime read from the
rollups alone — with the clock in the test's hands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Sum
from django.utils import timezone

from onwatch.core import jobs
from onwatch.core.models import JobState, Organization
from onwatch.uptime import rollups
from onwatch.uptime import tasks as _uptime_tasks  # noqa: F401  (registers uptime.rollup)
from onwatch.uptime.models import CheckResult, Monitor, Rollup

pytestmark = pytest.mark.django_db
DAY1 = datetime(2026, 3, 10, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY1 + timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)


def monitor(org: Organization, name: str = "shop") -> Monitor:
    return Monitor.objects.create(org=org, name=name, kind="http", config={"url": "http://x"})


def result(m: Monitor, when: datetime, ok: bool = True, latency: int | None = 100) -> None:
    CheckResult.objects.create(
        monitor=m, at=when, ok=ok, latency_ms=latency, status_code=200 if ok else 500
    )


def rows(period: str) -> list[tuple[Any, ...]]:
    return list(
        Rollup.objects.filter(period=period)
        .order_by("monitor_id", "start")
        .values_list(
            "monitor__name", "start", "checks", "failures", "latency_sum_ms", "latency_max_ms"
        )
    )


def test_it_rolls_results_into_hours_and_the_hours_into_days(org: Organization) -> None:
    m = monitor(org)
    result(m, at(1, 10, 5), latency=100)
    result(m, at(1, 10, 20), latency=300)
    result(m, at(1, 10, 40), ok=False, latency=5000)  # failures count, but not their times
    result(m, at(1, 11, 10), latency=200)
    result(m, at(1, 12, 1), ok=False, latency=None)

    rollups.run(now=at(1, 12, 30))

    assert rows("h") == [
        ("shop", at(1, 10), 3, 1, 400, 300),
        ("shop", at(1, 11), 1, 0, 200, 200),
        ("shop", at(1, 12), 1, 1, 0, 0),
    ]
    assert rows("d") == [("shop", at(1, 0), 5, 2, 600, 300)]
    points = rollups.series(m, at(1, 0), at(2, 0))
    assert [(p.start.hour, p.latency_avg_ms, p.uptime) for p in points] == [
        (10, 200.0, pytest.approx(66.667, abs=0.01)),
        (11, 200.0, 100.0),
        (12, None, 0.0),
    ]
    [day] = rollups.series(m, at(1, 0), at(2, 0), period="d")
    assert (day.checks, day.failures, day.latency_avg_ms, day.latency_max_ms) == (5, 2, 200, 300)


def test_running_it_again_changes_nothing(org: Organization) -> None:
    m = monitor(org)
    for minute in range(0, 60, 10):
        result(m, at(1, 9, minute), ok=minute != 30, latency=minute)
    rollups.run(now=at(1, 10, 5))
    first = rows("h"), rows("d")
    rollups.run(now=at(1, 10, 5))
    rollups.run(now=at(1, 10, 6))
    assert (rows("h"), rows("d")) == first
    assert Rollup.objects.count() == 2


def test_it_is_incremental_and_picks_up_results_written_late(org: Organization) -> None:
    m = monitor(org)
    result(m, at(1, 8, 30))
    result(m, at(1, 10, 30))
    rollups.run(now=at(1, 11, 0, 5))
    # Written after that run: one for the hour before (the prober writes a little after
    # the check began), and one for an hour the next run no longer looks at.
    result(m, at(1, 10, 59, 59), ok=False)
    result(m, at(1, 8, 45), ok=False)
    result(m, at(1, 11, 15))
    rollups.run(now=at(1, 12, 0, 5))
    assert rows("h") == [
        ("shop", at(1, 8), 1, 0, 100, 100),  # not recomputed: only recent hours are
        ("shop", at(1, 10), 2, 1, 100, 100),
        ("shop", at(1, 11), 1, 0, 100, 100),
    ]
    assert rows("d") == [("shop", at(1, 0), 4, 1, 300, 100)]


def test_raw_results_go_after_48_hours_and_uptime_still_reads_from_the_rollups(
    org: Organization,
) -> None:
    m = monitor(org)
    for hour in range(24):
        result(m, at(1, hour, 10), ok=hour % 4 != 0)  # 6 of 24 fail
    result(m, at(3, 1, 10))
    rollups.run(now=at(3, 2, 0))
    assert CheckResult.objects.count() == 25  # all younger than 48 hours
    rollups.run(now=at(3, 23, 0))
    # Day 1 ended 47 hours before: its last hour (23:10) stays, the rest goes.
    assert sorted(CheckResult.objects.values_list("at", flat=True)) == [
        at(1, 23, 10),
        at(3, 1, 10),
    ]
    assert rollups.uptime_percent(m, at(1, 0), at(2, 0)) == 75.0
    assert rollups.uptime_percent(m, at(1, 0), at(4, 0)) == 100.0 * 19 / 25


def test_rollups_age_out_hourly_after_90_days_and_daily_after_two_years(
    org: Organization,
) -> None:
    m = monitor(org)
    now = at(1, 12, 30)
    ages = {"h": [0, 89, 91], "d": [720, 740]}  # in days; the hour just gone is the newest
    for period, days in ages.items():
        for age in days:
            start = now - timedelta(days=age, minutes=30)
            Rollup.objects.create(monitor=m, period=period, start=start, checks=1)
    done = rollups.run(now=now)
    kept = {(r.period, (now - r.start).days) for r in Rollup.objects.all()}
    assert kept == {("h", 0), ("h", 89), ("d", 720), ("d", 0)}  # ("d", 0): today, made now
    assert (done["hourly_deleted"], done["daily_deleted"]) == (1, 1)


def test_uptime_joins_whole_days_and_the_hours_at_either_end(org: Organization) -> None:
    m, quiet = monitor(org), monitor(org, "quiet")
    result(m, at(1, 12), ok=False)  # before the range
    result(m, at(1, 20))
    result(m, at(2, 10), ok=False)
    result(m, at(2, 11))
    result(m, at(3, 3))
    result(m, at(3, 8), ok=False)  # after the range
    rollups.run(now=at(3, 23))
    # Day 2 from its daily rollup, the evening of day 1 and the night of day 3 by the hour.
    assert rollups.uptime_percents([m.pk, quiet.pk], at(1, 18), at(3, 6)) == {
        m.pk: 75.0,
        quiet.pk: None,
    }
    assert rollups.uptime_percent(m, at(1, 0), at(4, 0)) == 50.0
    assert rollups.uptime_percent(m, at(2, 10, 30), at(2, 12)) == 50.0  # to the hour
    # Nothing is read from the raw results: without them the answer is the same.
    CheckResult.objects.all().delete()
    assert rollups.uptime_percent(m, at(1, 18), at(3, 6)) == 75.0


def test_days_are_days_in_onwatchs_time_zone(org: Organization, settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    m = monitor(org)
    result(m, at(1, 22, 30), ok=False)  # 23:30 in Berlin: still the 10th
    result(m, at(1, 23, 30))  # 00:30 on the 11th in Berlin
    rollups.run(now=at(2, 3))
    berlin = timezone.get_default_timezone()
    starts = [r.start.astimezone(berlin) for r in Rollup.objects.filter(period="d")]
    assert sorted(s.isoformat() for s in starts) == [
        "2026-03-10T00:00:00+01:00",
        "2026-03-11T00:00:00+01:00",
    ]
    tenth = datetime(2026, 3, 10, tzinfo=berlin)
    assert rollups.uptime_percent(m, tenth, tenth + timedelta(days=1)) == 0.0


def test_the_uptime_rollup_job_rolls_up_the_last_hour(org: Organization) -> None:
    m = monitor(org)
    result(m, timezone.now() - timedelta(minutes=5))
    result(m, timezone.now() - timedelta(minutes=3), ok=False)
    job = jobs.enqueue("uptime.rollup")
    [done] = jobs.run_pending(kinds=["uptime.rollup"])
    assert done.pk == job.pk and done.state == JobState.SUCCEEDED
    # Summed: near the top of the hour the two results fall into two hours.
    hours = Rollup.objects.filter(period="h").aggregate(c=Sum("checks"), f=Sum("failures"))
    assert (hours["c"], hours["f"]) == (2, 1)
    assert done.result["hours"] >= 1


def test_the_hours_not_rolled_up_yet_count_from_the_raw_results_once(org: Organization) -> None:
    now = timezone.now()
    m = monitor(org)
    for minutes in (170, 130, 90, 50, 10):
        result(m, now - timedelta(minutes=minutes))
    rollups.run(now - timedelta(minutes=5))
    # Checks made since the job's last run: on main they stayed invisible for an hour.
    result(m, now - timedelta(minutes=2), ok=False, latency=None)
    result(m, now - timedelta(minutes=1), ok=False, latency=None)
    assert rollups.uptime_percent(m, now - timedelta(days=1), now + timedelta(seconds=1)) == (
        100.0 * 5 / 7
    )
    hours = rollups.series(m, now - timedelta(days=1), now + timedelta(seconds=1))
    assert sum(p.checks for p in hours) == 7 and sum(p.failures for p in hours) == 2
    today = rollups.series(m, rollups.floor_day(now), now + timedelta(seconds=1), rollups.DAY)
    assert sum(p.checks for p in today) == sum(
        1 for r in CheckResult.objects.all() if r.at >= rollups.floor_day(now)
    )
