"""Incidents: one per source, notes and acknowledgement, and dependencies — a child whose
parent is down is held back, and alerts for itself once the parent recovers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onwatch.alerts import incidents
from onwatch.alerts.models import Incident, IncidentState
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.models import Organization
from onwatch.uptime.models import Monitor, State
from onwatch.uptime.state import Outcome, apply, source
from tests.support.receivers import WebhookReceiver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run_deliveries() -> int:
    return len(jobs.run_pending(kinds=["alerts.deliver"]))


def titles(hooks: WebhookReceiver) -> list[str]:
    return [h.json["title"] for h in hooks.hooks]


def monitor(org: Organization, name: str, parent: Monitor | None = None) -> Monitor:
    return Monitor.objects.create(
        org=org,
        name=name,
        kind="http",
        config={"url": f"http://{name}.internal/"},
        confirmations=1,
        parent=parent,
    )


def fail(m: Monitor, now: datetime) -> None:
    apply(m, Outcome(ok=False, status_code=502, error="bad gateway"), now)


def succeed(m: Monitor, now: datetime) -> None:
    apply(m, Outcome(ok=True, status_code=200, latency_ms=30), now)


def test_a_child_of_a_down_parent_is_held_and_alerts_when_the_parent_recovers(
    org: Organization,
) -> None:
    router = monitor(org, "router")
    shop = monitor(org, "shop", parent=router)
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        fail(router, at(0))
        fail(shop, at(1))
        run_deliveries()
        # Parent and child down: only the parent's alert is sent.
        assert titles(hooks) == ["router is down"]
        held = incidents.current(org, source(shop))
        assert held is not None and held.held == "router is down"

        # The parent recovers while the child is still down: the child alerts now.
        succeed(router, at(10))
        run_deliveries()
    assert sorted(titles(hooks)[1:]) == ["router is up again", "shop is down"]
    shop.refresh_from_db()
    assert shop.state == State.DOWN
    child = incidents.current(org, source(shop))
    assert child is not None and child.held == ""
    assert list(child.events.values_list("kind", flat=True)) == [
        "opened",
        "held",
        "released",
        "notified",
    ]


def test_a_child_that_recovers_while_held_sends_nothing(org: Organization) -> None:
    router = monitor(org, "router")
    shop = monitor(org, "shop", parent=router)
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        fail(router, at(0))
        fail(shop, at(1))
        succeed(shop, at(2))
        succeed(router, at(3))
        run_deliveries()
    assert titles(hooks) == ["router is down", "router is up again"]


def test_a_held_incident_sends_on_release(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        incident = incidents.open_incident(
            org, "test:x", "x is down", {}, now=at(0), held="parent X is down"
        )
        assert incidents.escalate_due(at(30)) == 0
        assert run_deliveries() == 0
        incidents.release(incident, at(31))
        assert incident.held == ""
        run_deliveries()
        incidents.release(incident, at(32))  # releasing twice sends nothing more
        run_deliveries()
    assert titles(hooks) == ["x is down"]


def test_one_unresolved_incident_per_source(org: Organization) -> None:
    first = incidents.open_incident(org, "test:x", "x is down", {}, now=at(0))
    again = incidents.open_incident(org, "test:x", "x is still down", {}, now=at(5))
    assert again.pk == first.pk and again.title == "x is down"
    resolved = incidents.resolve_incident(org, "test:x", {}, now=at(6))
    assert resolved is not None and resolved.state == IncidentState.RESOLVED
    assert incidents.resolve_incident(org, "test:x", {}, now=at(7)) is None
    later = incidents.open_incident(org, "test:x", "x is down again", {}, now=at(8))
    assert later.pk != first.pk
    assert Incident.objects.filter(org=org, source="test:x").count() == 2


def test_acknowledge_once_and_notes_go_on_the_timeline(org: Organization) -> None:
    incident = incidents.open_incident(org, "test:x", "x is down", {}, now=at(0))
    assert incidents.acknowledge(incident, "ann", now=at(2))
    assert not incidents.acknowledge(incident, "bob", now=at(3))
    incidents.add_note(incident, "bob", "restarting the pool", now=at(4))
    assert (incident.state, incident.acknowledged_at) == (IncidentState.ACKNOWLEDGED, at(2))
    events = [(e.kind, e.actor, e.text) for e in incident.events.all()]
    assert events[-2:] == [("acknowledged", "ann", ""), ("note", "bob", "restarting the pool")]


def test_the_alert_carries_the_evidence(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        shop = monitor(org, "shop")
        fail(shop, at(0))
        run_deliveries()
    [hook] = hooks.hooks
    assert hook.json["title"] == "shop is down"
    assert "What is wrong: bad gateway" in hook.json["message"]
    assert "Status: 502" in hook.json["message"]
    assert "Since: 2026-03-02 09:00 UTC" in hook.json["message"]
