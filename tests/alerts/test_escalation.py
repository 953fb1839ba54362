"""Escalation with a hand-driven clock: steps, reminders, acknowledgement and the recovery
notice, delivered by the real worker path to a real SMTP server and webhook receiver."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import (
    Channel,
    Delivery,
    DeliveryState,
    EscalationPolicy,
    EscalationStep,
    Incident,
    IncidentState,
)
from onwatch.alerts.services import add_channel
from onwatch.alerts.tasks import on_tick
from onwatch.core import jobs, scheduler
from onwatch.core.models import JobState, Organization
from tests.support.fixtures import make_org
from tests.support.receivers import SmtpReceiver, WebhookReceiver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SOURCE = "test:db-1"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run_deliveries() -> int:
    done = jobs.run_pending(kinds=["alerts.deliver"])
    assert all(j.state == JobState.SUCCEEDED for j in done), [j.error for j in done]
    return len(done)


def make_policy(
    org: Organization, steps: list[tuple[int, list[Channel]]], repeat: int = 0, **kw: Any
) -> EscalationPolicy:
    policy = EscalationPolicy.objects.create(org=org, name="on-call", repeat_minutes=repeat, **kw)
    for position, (after, channels) in enumerate(steps):
        step = EscalationStep.objects.create(policy=policy, position=position, after_minutes=after)
        step.channels.set(channels)
    return policy


def subjects(smtp: SmtpReceiver) -> list[str]:
    return [m.subject for m in smtp.mails]


def titles(hooks: WebhookReceiver) -> list[str]:
    return [h.json["title"] for h in hooks.hooks]


def timeline(incident: Incident) -> list[str]:
    return list(incident.events.values_list("kind", flat=True))


def test_steps_reminders_and_recovery_arrive_at_their_times(org: Organization) -> None:
    with SmtpReceiver() as smtp, WebhookReceiver() as hooks:
        mail = add_channel(org, "mail", smtp.url())
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(0, [mail]), (10, [hook])], repeat=30)

        incident = incidents.open_incident(
            org, SOURCE, "db-1 is down", {"error": "connection refused"}, now=T0, policy=policy
        )
        assert run_deliveries() == 1
        assert subjects(smtp) == ["db-1 is down"] and titles(hooks) == []
        assert "connection refused" in smtp.mails[0].text

        # One second before the second step nothing is due; at 10 minutes the webhook goes.
        assert incidents.escalate_due(at(10) - timedelta(seconds=1)) == 0
        assert run_deliveries() == 0
        assert incidents.escalate_due(at(10)) == 1
        assert run_deliveries() == 1
        assert titles(hooks) == ["db-1 is down"] and len(smtp.mails) == 1
        assert incidents.escalate_due(at(10)) == 0  # a second tick at the same time: nothing

        # Reminders to everyone notified, 30 minutes after the last notice.
        assert incidents.escalate_due(at(39)) == 0
        assert incidents.escalate_due(at(40)) == 1
        assert run_deliveries() == 2
        assert subjects(smtp) == ["db-1 is down", "Reminder: db-1 is down"]
        assert titles(hooks) == ["db-1 is down", "Reminder: db-1 is down"]

        # Acknowledged: no more reminders, however long it stays open.
        assert incidents.acknowledge(incident, "ann@acme.example", now=at(45))
        assert incidents.escalate_due(at(70)) == 0
        assert incidents.escalate_due(at(600)) == 0
        assert run_deliveries() == 0

        # Over: the recovery notice goes to everyone who was told.
        incidents.resolve_incident(org, SOURCE, {"latency_ms": 40}, now=at(240))
        assert run_deliveries() == 2
    assert subjects(smtp)[-1] == "Resolved: db-1 is down"
    assert "is over after 240 min" in smtp.mails[-1].text
    assert titles(hooks)[-1] == "Resolved: db-1 is down"
    assert len(smtp.mails) == 3 and len(hooks.hooks) == 3
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED and incident.next_action_at is None
    assert timeline(incident) == [
        "opened",
        "notified",
        "notified",
        "reminded",
        "acknowledged",
        "resolved",
        "recovered",
    ]
    assert Delivery.objects.filter(org=org, state=DeliveryState.DELIVERED).count() == 6


def test_reminders_repeat_until_resolved(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(0, [hook])], repeat=15)
        incidents.open_incident(org, SOURCE, "queue stuck", {}, now=T0, policy=policy)
        for minute in (5, 14, 15, 20, 29, 30, 31):
            incidents.escalate_due(at(minute))
        run_deliveries()
        assert titles(hooks) == ["queue stuck", "Reminder: queue stuck", "Reminder: queue stuck"]
        incidents.resolve_incident(org, SOURCE, {}, now=at(32))
        assert incidents.escalate_due(at(60)) == 0
        run_deliveries()
    assert titles(hooks)[-1] == "Resolved: queue stuck" and len(hooks.hooks) == 4


def test_acknowledging_before_a_later_step_means_it_never_sends(org: Organization) -> None:
    with SmtpReceiver() as smtp, WebhookReceiver() as hooks:
        mail = add_channel(org, "mail", smtp.url())
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(0, [mail]), (10, [hook])])
        incident = incidents.open_incident(org, SOURCE, "api down", {}, now=T0, policy=policy)
        incidents.acknowledge(incident, "bob", now=at(5))
        assert incidents.escalate_due(at(10)) == 0
        incidents.resolve_incident(org, SOURCE, {}, now=at(20))
        run_deliveries()
    # The mail channel heard of it and hears it is over; the webhook never did.
    assert subjects(smtp) == ["api down", "Resolved: api down"]
    assert hooks.hooks == []


def test_without_a_policy_every_channel_of_the_org_hears_at_once(org: Organization) -> None:
    other = make_org("Other")
    with SmtpReceiver() as smtp, WebhookReceiver() as hooks, WebhookReceiver() as theirs:
        add_channel(org, "mail", smtp.url())
        add_channel(org, "hook", hooks.url())
        add_channel(other, "their hook", theirs.url())
        incidents.open_incident(org, SOURCE, "shop down", {"status": 502}, now=T0)
        assert run_deliveries() == 2
        assert incidents.escalate_due(at(60)) == 0
        incidents.resolve_incident(org, SOURCE, {}, now=at(61))
        run_deliveries()
    assert subjects(smtp) == ["shop down", "Resolved: shop down"]
    assert "Status: 502" in smtp.mails[0].text
    assert titles(hooks) == ["shop down", "Resolved: shop down"]
    assert theirs.hooks == []


def test_no_recovery_notice_when_the_policy_says_so(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(0, [hook])], notify_recovery=False)
        incidents.open_incident(org, SOURCE, "disk full", {}, now=T0, policy=policy)
        incidents.resolve_incident(org, SOURCE, {}, now=at(3))
        run_deliveries()
    assert titles(hooks) == ["disk full"]


def test_steps_fire_by_their_delay_whatever_their_order(org: Organization) -> None:
    with WebhookReceiver() as early, WebhookReceiver() as late:
        a = add_channel(org, "early", early.url())
        b = add_channel(org, "late", late.url())
        # Listed late-first: the 5-minute step must not wait behind the 20-minute one.
        policy = make_policy(org, [(20, [b]), (5, [a])])
        incidents.open_incident(org, SOURCE, "slow", {}, now=T0, policy=policy)
        assert incidents.escalate_due(at(5)) == 1
        run_deliveries()
        assert (len(early.hooks), len(late.hooks)) == (1, 0)
        assert incidents.escalate_due(at(20)) == 1
        run_deliveries()
    assert (len(early.hooks), len(late.hooks)) == (1, 1)


def test_the_scheduler_tick_escalates_what_is_due_on_the_real_clock(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(10, [hook])])
        opened = timezone.now() - timedelta(minutes=11)
        incidents.open_incident(org, SOURCE, "cron missed", {}, now=opened, policy=policy)
        assert run_deliveries() == 0
        scheduler.tick()
        run_deliveries()
    assert titles(hooks) == ["cron missed"]


def test_one_broken_incident_does_not_stop_the_others(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        hook = add_channel(org, "hook", hooks.url())
        policy = make_policy(org, [(0, [hook]), (10, [hook])])
        incidents.open_incident(org, "test:a", "a down", {}, now=T0, policy=policy)
        incidents.open_incident(org, "test:b", "b down", {}, now=T0, policy=policy)
        run_deliveries()
        # A row broken by hand (evidence that is not a dict) fails; the healthy one still
        # escalates on the same tick.
        Incident.objects.filter(source="test:a").update(evidence=["not", "a", "dict"])
        result = on_tick(at(10))
        run_deliveries()
    assert result["escalated"] == 1
    assert titles(hooks) == ["a down", "b down", "b down"]


@pytest.mark.django_db(transaction=True)
def test_schedulers_racing_on_one_incident_send_each_step_once() -> None:
    org = make_org()
    hook = add_channel(org, "hook", "json://127.0.0.1:9/never-called")
    policy = make_policy(org, [(0, [hook]), (10, [hook])], repeat=5)
    incidents.open_incident(org, SOURCE, "db-1 is down", {}, now=T0, policy=policy)
    start = threading.Barrier(4)
    done: list[int] = []

    def scheduler() -> None:
        try:
            start.wait()
            for _ in range(20):
                try:
                    done.append(incidents.escalate_due(at(10)))
                    return
                except OperationalError as e:
                    # The SQLite test database is shared-cache in memory, which answers
                    # "table is locked" at once instead of waiting as onwatch's WAL file
                    # does; a scheduler would try again on its next tick.
                    if "locked" not in str(e):
                        raise
                    time.sleep(0.05)
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The opening sent the first step; exactly one of the four sent the second.
    assert sorted(done) == [0, 0, 0, 1]
    assert Delivery.objects.filter(org=org).count() == 2
