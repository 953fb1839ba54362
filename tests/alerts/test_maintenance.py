"""Maintenance windows: one-off and cron + duration in a time zone. Incidents opened inside
one are held (recorded, nothing sent) and alert when the window ends if still open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onwatch.alerts import incidents
from onwatch.alerts.models import Delivery, EscalationPolicy, EscalationStep, Maintenance
from onwatch.alerts.services import add_channel
from onwatch.alerts.tasks import on_tick
from onwatch.core import jobs
from onwatch.core.models import Organization
from tests.support.receivers import WebhookReceiver

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
SOURCE = "uptime.monitor:7"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run_deliveries() -> int:
    return len(jobs.run_pending(kinds=["alerts.deliver"]))


def titles(hooks: WebhookReceiver) -> list[str]:
    return [h.json["title"] for h in hooks.hooks]


def one_off(org: Organization, start: float, end: float, **kw: object) -> Maintenance:
    return Maintenance.objects.create(
        org=org, name="db upgrade", starts_at=at(start), ends_at=at(end), **kw
    )


def test_an_incident_in_a_window_is_held_then_alerts_when_it_ends(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        one_off(org, 0, 30)
        incident = incidents.open_incident(org, SOURCE, "shop down", {}, now=at(10))
        assert incident.held == "maintenance: db upgrade"
        assert incidents.escalate_due(at(20)) == 0
        assert on_tick(at(29)) == {"released": 0, "escalated": 0}
        assert run_deliveries() == 0 and not Delivery.objects.exists()

        assert on_tick(at(30)) == {"released": 1, "escalated": 0}
        run_deliveries()
    assert titles(hooks) == ["shop down"]
    incident.refresh_from_db()
    assert incident.held == ""
    kinds = list(incident.events.values_list("kind", flat=True))
    assert kinds == ["opened", "held", "released", "notified"]


def test_an_incident_over_within_the_window_never_sends(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        one_off(org, 0, 30)
        incidents.open_incident(org, SOURCE, "shop down", {}, now=at(5))
        incidents.resolve_incident(org, SOURCE, {}, now=at(8))
        on_tick(at(31))
        on_tick(at(90))
        run_deliveries()
    assert hooks.hooks == []


def test_a_window_covers_only_its_sources(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        one_off(org, 0, 30, sources=[SOURCE])
        held = incidents.open_incident(org, SOURCE, "covered", {}, now=at(5))
        loud = incidents.open_incident(org, "uptime.monitor:8", "not covered", {}, now=at(5))
        run_deliveries()
    assert held.held and not loud.held
    assert titles(hooks) == ["not covered"]


def test_escalation_counts_from_the_release_not_from_the_opening(org: Organization) -> None:
    with WebhookReceiver() as first, WebhookReceiver() as second:
        a = add_channel(org, "first", first.url())
        b = add_channel(org, "second", second.url())
        policy = EscalationPolicy.objects.create(org=org, name="p")
        for position, (after, ch) in enumerate([(0, a), (10, b)]):
            step = EscalationStep.objects.create(
                policy=policy, position=position, after_minutes=after
            )
            step.channels.set([ch])
        one_off(org, 0, 60)
        incidents.open_incident(org, SOURCE, "down", {}, now=at(5), policy=policy)
        # Released 55 minutes after it opened: the first step, not both at once.
        on_tick(at(60))
        run_deliveries()
        assert (len(first.hooks), len(second.hooks)) == (1, 0)
        assert on_tick(at(69))["escalated"] == 0
        assert on_tick(at(70))["escalated"] == 1
        run_deliveries()
    assert (len(first.hooks), len(second.hooks)) == (1, 1)


def test_a_recurring_window_follows_its_time_zone_across_dst(org: Organization) -> None:
    # Sundays 02:00 to 03:00 in Prague: 01:00-02:00 UTC in winter, 00:00-01:00 UTC in summer.
    m = Maintenance.objects.create(
        org=org, name="weekly", cron="0 2 * * 0", tz="Europe/Prague", duration_minutes=60
    )
    winter = datetime(2026, 1, 4, tzinfo=UTC)  # a Sunday
    summer = datetime(2026, 7, 5, tzinfo=UTC)  # a Sunday
    assert not incidents.maintenance_active(m, winter.replace(hour=0, minute=59))
    assert incidents.maintenance_active(m, winter.replace(hour=1))
    assert incidents.maintenance_active(m, winter.replace(hour=1, minute=59))
    assert not incidents.maintenance_active(m, winter.replace(hour=2))
    assert incidents.maintenance_active(m, summer.replace(hour=0, minute=30))
    assert not incidents.maintenance_active(m, summer.replace(hour=1, minute=30))
    assert not incidents.maintenance_active(m, summer + timedelta(days=1, minutes=30))


def test_back_to_back_windows_have_no_gap(org: Organization) -> None:
    # Every hour for an hour: always on, including the instant one hands over to the next.
    m = Maintenance.objects.create(org=org, name="freeze", cron="0 * * * *", duration_minutes=60)
    for minute in (0, 0.5, 30, 59.99, 60, 60.01):
        assert incidents.maintenance_active(m, at(minute)), minute


def test_a_recurring_window_holds_and_releases(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        # Daily 02:00-02:45 UTC; T0 is 02:00 UTC.
        Maintenance.objects.create(org=org, name="nightly", cron="0 2 * * *", duration_minutes=45)
        incidents.open_incident(org, SOURCE, "batch host down", {}, now=at(1))
        assert on_tick(at(44))["released"] == 0
        assert on_tick(at(45))["released"] == 1
        run_deliveries()
    assert titles(hooks) == ["batch host down"]


def test_an_invalid_cron_never_holds_alerts_back(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        # Only a raw write gets a bad expression in; forms refuse it.
        Maintenance.objects.create(org=org, name="bad", cron="61 * * * *", duration_minutes=60)
        incidents.open_incident(org, SOURCE, "down", {}, now=at(1))
        run_deliveries()
    assert titles(hooks) == ["down"]


def test_removing_a_window_releases_what_it_held(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        m = one_off(org, 0, 600)
        incidents.open_incident(org, SOURCE, "down", {}, now=at(1))
        m.delete()
        assert on_tick(at(2))["released"] == 1
        run_deliveries()
    assert titles(hooks) == ["down"]


def test_a_parent_recovering_inside_a_window_keeps_the_child_held(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        child = incidents.open_incident(org, SOURCE, "child down", {}, now=at(1), held="p down")
        one_off(org, 2, 30)
        incidents.release(child, at(5))
        assert child.held == "maintenance: db upgrade"
        run_deliveries()
        assert hooks.hooks == []
        on_tick(at(30))
        run_deliveries()
    assert titles(hooks) == ["child down"]
