"""The scheduler as plain function calls with a controllable `now`, then once as a real
`onwatch scheduler` process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core import scheduler
from onwatch.core.models import Job, Organization, Schedule
from onwatch.core.scheduler import fire, tick
from tests.support.child import call
from tests.support.child import scheduler as child_scheduler
from tests.support.fixtures import make_org
from tests.support.procs import Running, free_port, isolated

WINTER_NOON = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def schedule(
    cron: str = "0 3 * * *", tz: str = "UTC", name: str = "", org: Organization | None = None
) -> Schedule:
    return Schedule.objects.create(name=name or cron, kind="core.noop", cron=cron, tz=tz, org=org)


def with_channel(org: Organization) -> Organization:
    add_channel(org, "ops", f"json://127.0.0.1:{free_port()}/")
    return org


def break_it(s: Schedule, **fields: str) -> None:
    """Write around save()'s validation, as a raw UPDATE or an old row would."""
    Schedule.objects.filter(pk=s.pk).update(**fields)


@pytest.mark.django_db
def test_0300_in_prague_fires_at_0200_utc_in_winter() -> None:
    s = schedule("0 3 * * *", "Europe/Prague")
    assert tick(WINTER_NOON) == 0  # the first tick only places it
    s.refresh_from_db()
    assert s.next_run_at == utc(2025, 1, 11, 2, 0)
    assert tick(utc(2025, 1, 11, 1, 59, 59)) == 0
    assert tick(utc(2025, 1, 11, 2, 0)) == 1
    [job] = Job.objects.filter(schedule=s)
    assert job.kind == "core.noop"
    s.refresh_from_db()
    assert s.next_run_at == utc(2025, 1, 12, 2, 0)
    assert s.last_run_at == utc(2025, 1, 11, 2, 0)


@pytest.mark.django_db
def test_0300_in_prague_fires_at_0100_utc_in_summer() -> None:
    s = schedule("0 3 * * *", "Europe/Prague")
    tick(utc(2025, 7, 10, 12, 0))
    s.refresh_from_db()
    assert s.next_run_at == utc(2025, 7, 11, 1, 0)


@pytest.mark.django_db
def test_a_scheduler_that_was_down_for_days_fires_once_not_for_every_missed_time() -> None:
    s = schedule("0 3 * * *")
    tick(WINTER_NOON)
    assert tick(WINTER_NOON + timedelta(days=5)) == 1
    assert Job.objects.filter(schedule=s).count() == 1
    s.refresh_from_db()
    assert s.next_run_at == utc(2025, 1, 16, 3, 0)


@pytest.mark.django_db
def test_a_due_schedule_fires_once_when_two_schedulers_reach_it() -> None:
    s = schedule("0 3 * * *")
    tick(WINTER_NOON)
    at = utc(2025, 1, 11, 3, 0)
    assert fire(s.pk, at) == 1
    assert fire(s.pk, at) == 0
    assert Job.objects.filter(schedule=s).count() == 1


@pytest.mark.django_db
def test_a_switched_off_schedule_does_not_fire() -> None:
    s = schedule("0 3 * * *")
    tick(WINTER_NOON)
    Schedule.objects.filter(pk=s.pk).update(enabled=False)
    assert tick(WINTER_NOON + timedelta(days=1)) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cron", "tz", "says"),
    [
        ("61 * * * *", "UTC", "'61 * * * *' is not a valid cron expression (bad minute)"),
        ("every day", "UTC", "'every day' is not a cron expression; use five fields"),
        ("* * * * * *", "UTC", "use five fields like '0 3 * * *'"),
        ("0 0 30 2 *", "UTC", "(bad day-of-month)"),
        ("0 3 * * *", "Europe/Atlantis", "'Europe/Atlantis' is not a time zone; use a name like"),
        ("0 3 * * *", "", "'' is not a time zone"),
    ],
)
def test_a_bad_expression_or_zone_is_refused_when_saved(cron: str, tz: str, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        schedule(cron, tz)
    assert says in " ".join(refused.value.messages)
    assert not Schedule.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cron": "99 * * * *"}, "bad minute"),
        ({"tz": "Mars/Olympus_Mons"}, "is not a time zone"),
    ],
)
def test_a_bad_row_is_switched_off_and_alerted_while_the_others_still_fire(
    fields: dict[str, str], says: str
) -> None:
    org = with_channel(make_org())
    bad = schedule("0 3 * * *", name="nightly backup", org=org)
    good = schedule("0 4 * * *", name="drill", org=org)
    tick(WINTER_NOON)
    break_it(bad, **fields)
    assert tick(WINTER_NOON + timedelta(days=1)) == 1
    bad.refresh_from_db()
    assert not bad.enabled
    assert says in bad.last_error
    fired = Job.objects.filter(kind="core.noop").values_list("schedule", flat=True)
    assert list(fired) == [good.pk]
    [alert] = Delivery.objects.all()
    assert alert.title == "Schedule 'nightly backup' was switched off"
    assert says in alert.body and "switch it on again" in alert.body
    # Later ticks leave it alone: one alert, not one per tick.
    assert tick(WINTER_NOON + timedelta(days=2)) == 1
    assert Delivery.objects.count() == 1


# `onwatch up` runs the scheduler on a thread of its worker: the same, one process fewer.
@pytest.mark.parametrize("command", [["scheduler"], ["worker", "--with-scheduler"]])
def test_a_real_scheduler_process_fires_due_schedules_past_a_broken_one(
    tmp_path: Path, command: list[str]
) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_SCHEDULER_TICK_SECONDS="1") as env:
        call(
            child_scheduler.add_due_schedules_one_broken,
            env,
            f"json://127.0.0.1:{free_port()}/",
            migrate=True,
        )
        with Running(command, env) as scheduler:
            out = call(child_scheduler.print_what_fired, env)
            scheduler.wait_for("schedule 'broken' switched off")
            assert scheduler.proc.poll() is None
    enabled, error, fired, alerts = json.loads(out)
    assert not enabled
    assert "'0 3 * *' is not a cron expression" in error
    assert fired == ["fine"]
    assert alerts == ["Schedule 'broken' was switched off"]


@pytest.mark.django_db
def test_every_tick_runs_the_registered_hooks_even_when_one_fails() -> None:
    seen: list[datetime] = []

    def broken(now: datetime) -> None:
        raise RuntimeError("boom")

    scheduler.every_tick("tests.broken", broken)
    scheduler.every_tick("tests.seen", seen.append)
    try:
        scheduler.tick(WINTER_NOON)
    finally:
        del scheduler.TICK_HOOKS["tests.broken"], scheduler.TICK_HOOKS["tests.seen"]
    assert seen == [WINTER_NOON]


@pytest.mark.django_db
def test_built_in_schedules_are_created_once() -> None:
    scheduler.ensure_builtin()
    assert scheduler.ensure_builtin() == 0
    rollup = Schedule.objects.get(name="History roll-up")
    assert (rollup.kind, rollup.org) == ("uptime.rollup", None)
    reclaim = Schedule.objects.get(name="Backup space reclaim")
    assert (reclaim.kind, reclaim.cron, reclaim.org) == ("backups.reclaim_all", "30 3 * * 0", None)
