"""Heartbeat schedules and the overdue sweep, on a clock the tests drive by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onwatch.alerts.models import Incident, IncidentState
from onwatch.core import scheduler
from onwatch.core.models import Organization
from onwatch.uptime import heartbeats, pings
from onwatch.uptime.heartbeats import HeartbeatSpec, check_overdue
from onwatch.uptime.models import Kind, Monitor, Ping, State, StateChange
from onwatch.uptime.pings import Received
from onwatch.uptime.specs import SpecError

T0 = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)


def make_heartbeat(org: Organization, **config: Any) -> Monitor:
    return Monitor.objects.create(
        org=org, name="nightly backup", kind=Kind.HEARTBEAT, config=heartbeats.validate(config)
    )


def ping(monitor: Monitor, at: datetime, type: str = Ping.Type.SUCCESS, **kw: Any) -> Monitor:
    """Ping as the view does (a fresh lookup each time) and return the monitor afterwards."""
    found = pings.find(monitor.ping_id)
    assert found is not None
    pings.record(found, Received(type=type, **kw), at)
    return Monitor.objects.get(pk=monitor.pk)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# Settings


def test_a_period_or_a_cron_schedule_is_accepted_with_defaults_left_out() -> None:
    assert heartbeats.validate({}) == {}
    assert heartbeats.validate({"period": 300, "grace": 3600}) == {"period": 300}
    assert heartbeats.validate({"cron": "0 3 * * *", "tz": "Europe/Prague", "grace": 60}) == {
        "cron": "0 3 * * *",
        "tz": "Europe/Prague",
        "grace": 60,
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"period": 60, "cron": "* * * * *"}, "either 'period' (seconds) or 'cron', not both"),
        ({"cron": "0 3 * *"}, "is not a cron expression"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "is not a time zone"),
        ({"period": 10}, "'period' is not valid"),
        ({"min_duration": 60, "max_duration": 30}, "'min_duration' must be shorter"),
        ({"every": 60}, "'every' is not a setting of a heartbeat"),
    ],
)
def test_unusable_settings_are_refused_with_one_sentence(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as e:
        heartbeats.validate(config)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


# When the next ping is due


def test_a_period_is_counted_from_the_ping() -> None:
    spec = HeartbeatSpec(period=3600)
    assert heartbeats.next_due(spec, T0, None) == T0 + s(3600)
    late = T0 + s(3600 + 50)
    assert heartbeats.next_due(spec, late, T0) == late + s(3600)


def test_a_period_ping_a_little_early_counts_for_its_slot() -> None:
    spec = HeartbeatSpec(period=3600)
    early = T0 + s(3600 - 300)  # 5 minutes early; a tenth of the period is 6
    assert heartbeats.next_due(spec, early, T0) == T0 + s(7200)


def test_a_much_earlier_extra_ping_restarts_the_period() -> None:
    spec = HeartbeatSpec(period=3600)
    extra = T0 + s(1800)
    assert heartbeats.next_due(spec, extra, T0) == extra + s(3600)


def test_a_cron_ping_is_due_at_the_next_slot_in_its_time_zone() -> None:
    spec = HeartbeatSpec(cron="0 3 * * *", tz="Europe/Prague")
    # 03:10 in Prague (winter, UTC+1) is 02:10 UTC: late for today's run, next is tomorrow.
    assert heartbeats.next_due(spec, datetime(2025, 1, 15, 2, 10, tzinfo=UTC), None) == (
        datetime(2025, 1, 16, 2, 0, tzinfo=UTC)
    )


def test_a_cron_ping_seconds_before_its_slot_counts_for_that_slot() -> None:
    spec = HeartbeatSpec(cron="*/5 * * * *")
    early = datetime(2025, 1, 15, 10, 4, 55, tzinfo=UTC)
    assert heartbeats.next_due(spec, early, None) == datetime(2025, 1, 15, 10, 10, tzinfo=UTC)
    # Half a slot early is an extra run, not this slot's.
    extra = datetime(2025, 1, 15, 10, 2, 30, tzinfo=UTC)
    assert heartbeats.next_due(spec, extra, None) == datetime(2025, 1, 15, 10, 5, tzinfo=UTC)


# The overdue sweep


@pytest.mark.django_db
def test_a_new_heartbeat_is_not_overdue_before_its_first_ping(org: Organization) -> None:
    make_heartbeat(org, period=60, grace=0)
    assert check_overdue(T0 + timedelta(days=30)) == 0


@pytest.mark.django_db
def test_a_missing_ping_fails_only_after_the_grace_time(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=600), T0)
    assert m.state == State.UP
    assert m.alarm_at == T0 + s(3600 + 600)
    assert check_overdue(T0 + s(3600 + 599)) == 0
    assert Monitor.objects.get(pk=m.pk).state == State.UP
    assert check_overdue(T0 + s(3600 + 600)) == 1
    assert Monitor.objects.get(pk=m.pk).state == State.DOWN


@pytest.mark.django_db
def test_overdue_goes_down_and_opens_an_incident_with_the_reason(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)
    assert check_overdue(T0 + s(3700)) == 1
    m.refresh_from_db()
    assert m.state == State.DOWN and m.alarm_at is None
    change = StateChange.objects.get(monitor=m, new=State.DOWN)
    assert "No ping since 2025-01-15 09:00:00 UTC" in change.evidence["error"]
    incident = Incident.objects.get(org=org, source=f"uptime.monitor:{m.pk}")
    assert incident.state == IncidentState.OPEN
    assert incident.title == "nightly backup is down"
    # Claimed once: the next sweep has nothing to do.
    assert check_overdue(T0 + s(3800)) == 0


@pytest.mark.django_db
def test_a_success_after_down_goes_up_and_resolves_the_incident(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)
    check_overdue(T0 + s(3700))
    m = ping(m, T0 + s(4000))
    assert m.state == State.UP
    assert m.alarm_at == T0 + s(4000 + 3600 + 60)
    incident = Incident.objects.get(org=org, source=f"uptime.monitor:{m.pk}")
    assert incident.state == IncidentState.RESOLVED
    assert incident.resolved_at == T0 + s(4000)


@pytest.mark.django_db
def test_one_missed_heartbeat_is_enough_whatever_the_confirmations(org: Organization) -> None:
    m = make_heartbeat(org, period=3600, grace=60)
    Monitor.objects.filter(pk=m.pk).update(confirmations=3)
    ping(m, T0)
    check_overdue(T0 + s(3700))
    assert Monitor.objects.get(pk=m.pk).state == State.DOWN


@pytest.mark.django_db
def test_a_period_job_running_a_little_early_is_not_marked_down(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)
    ping(m, T0 + s(3600 - 300))  # five minutes early
    # Without the allowance the alarm would be at 10:55 + 1 h + grace, before 11:00.
    assert check_overdue(T0 + s(7200 + 30)) == 0
    m = ping(m, T0 + s(7200 + 30))
    assert m.state == State.UP


@pytest.mark.django_db
def test_a_cron_job_running_seconds_early_is_not_marked_down(org: Organization) -> None:
    m = make_heartbeat(org, cron="0 3 * * *", tz="Europe/Prague", grace=300)
    slot = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)  # 03:00 in Prague
    m = ping(m, slot - s(10))
    assert m.alarm_at == slot + timedelta(days=1) + s(300)
    assert check_overdue(slot + s(3600)) == 0
    assert Monitor.objects.get(pk=m.pk).state == State.UP


@pytest.mark.django_db
def test_a_long_cron_run_counts_for_the_slot_it_started_at(org: Organization) -> None:
    m = make_heartbeat(org, cron="*/5 * * * *", grace=60)
    slot = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    ping(m, slot, Ping.Type.START)
    m = ping(m, slot + s(290))  # ends 10 s before the next slot
    assert m.alarm_at == slot + s(300 + 60)


@pytest.mark.django_db
def test_a_run_that_never_finishes_fails_after_max_duration(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=86400, grace=3600, max_duration=600), T0)
    m = ping(m, T0 + s(86400), Ping.Type.START)
    assert m.last_start_at == T0 + s(86400)
    assert m.alarm_at == T0 + s(86400 + 600)
    assert check_overdue(T0 + s(86400 + 599)) == 0
    assert check_overdue(T0 + s(86400 + 600)) == 1
    change = StateChange.objects.get(monitor=m, new=State.DOWN)
    assert "did not finish within 600 s" in change.evidence["error"]


@pytest.mark.django_db
def test_without_max_duration_a_run_gets_the_grace_time(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=86400, grace=900), T0, Ping.Type.START)
    assert m.alarm_at == T0 + s(900)
    assert check_overdue(T0 + s(900)) == 1


@pytest.mark.django_db
def test_a_paused_heartbeat_is_never_overdue(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)
    Monitor.objects.filter(pk=m.pk).update(enabled=False)
    assert check_overdue(T0 + s(99999)) == 0


@pytest.mark.django_db
def test_every_scheduler_tick_runs_the_sweep(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)  # long overdue by now
    scheduler.tick()
    assert Monitor.objects.get(pk=m.pk).state == State.DOWN


@pytest.mark.django_db
def test_a_heartbeat_with_unusable_settings_still_fails_with_a_reason(org: Organization) -> None:
    m = ping(make_heartbeat(org, period=3600, grace=60), T0)
    Monitor.objects.filter(pk=m.pk).update(config={"period": "soon"})
    assert check_overdue(T0 + s(3700)) == 1
    change = StateChange.objects.get(monitor=m, new=State.DOWN)
    assert "settings are not usable" in change.evidence["error"]
