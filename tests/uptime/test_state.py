from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from onwatch.alerts.incidents import incident_text
from onwatch.alerts.models import EscalationPolicy, Incident, IncidentState
from onwatch.core.models import Organization
from onwatch.uptime.models import Kind, Monitor, State
from onwatch.uptime.state import Outcome, apply
from tests.support.fixtures import make_member, signed_in
from tests.support.servers import HttpServer, probe

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def make_monitor(org: Organization, **kw: object) -> Monitor:
    return Monitor.objects.create(
        org=org, name="shop", kind=Kind.HTTP, config={"url": "http://127.0.0.1:9/"}, **kw
    )


def test_it_goes_down_only_after_the_confirmations_and_retries_sooner(org: Organization) -> None:
    m = make_monitor(org, confirmations=3, interval=60, retry_interval=20)
    apply(m, Outcome(ok=True, latency_ms=12), T0)
    assert (m.state, m.next_check_at) == (State.UP, T0 + timedelta(seconds=60))
    assert apply(m, Outcome(ok=False, error="refused"), T0) is None
    assert (m.state, m.failures, m.next_check_at) == (State.UP, 1, T0 + timedelta(seconds=20))
    apply(m, Outcome(ok=False, error="refused"), T0)
    change = apply(m, Outcome(ok=False, error="refused", status_code=502), T0)
    assert change is not None and (change.old, change.new) == (State.UP, State.DOWN)
    assert change.evidence["error"] == "refused" and change.evidence["status"] == 502
    assert Incident.objects.get().state == IncidentState.OPEN


def test_one_success_brings_it_up_and_resolves_the_incident(org: Organization) -> None:
    m = make_monitor(org, confirmations=1)
    apply(m, Outcome(ok=False, error="timeout"), T0)
    assert m.state == State.DOWN
    change = apply(m, Outcome(ok=True, latency_ms=30), T0 + timedelta(minutes=5))
    assert change is not None and change.new == State.UP
    assert Incident.objects.get().state == IncidentState.RESOLVED


def test_the_monitors_escalation_policy_governs_its_incident(org: Organization) -> None:
    policy = EscalationPolicy.objects.create(org=org, name="office hours")
    m = make_monitor(org, confirmations=1, policy=policy)
    apply(m, Outcome(ok=False, error="down"), T0)
    assert Incident.objects.get().policy == policy


def test_a_target_answering_random_bytes_alerts_in_one_short_line(org: Organization) -> None:
    with HttpServer() as web:
        m = make_monitor(org, confirmations=1)
        m.config = {"url": web.url("/noise")}
        m.save()
        outcome = probe("http", m.config)
    apply(m, outcome, T0)
    incident = Incident.objects.get()
    assert incident.evidence["error"].startswith("The answer is not valid HTTP")
    assert len(incident.evidence["error"]) <= 200 and len(m.last_error) <= 200
    # What the alert says: the error stays one short line, not a kilobyte of bytes.
    text = incident_text(incident)
    [wrong] = [line for line in text.splitlines() if line.startswith("What is wrong: ")]
    assert len(wrong) <= len("What is wrong: ") + 200
    assert_readable(text)
    # The whole text is evidence on the monitor's page, folded away.
    viewer = make_member(org, "viewer")
    html = signed_in(viewer).get(f"/monitors/{m.pk}/").content.decode()
    assert "Whole error text" in html
    assert len(m.changes.get().evidence["error_full"]) > 1000


def assert_readable(text: str) -> None:
    """An alert people can read: short lines, no raw bytes, and quoted bytes (\\x..) in
    one short line at most (the error, which names what came back)."""
    lines = text.splitlines()
    assert all(len(line) <= 220 for line in lines), text
    assert len([line for line in lines if "\\x" in line]) <= 1, text
    assert all(ch.isprintable() and ch != "\ufffd" for line in lines for ch in line), text


def test_a_500_answer_with_a_binary_body_alerts_without_the_junk(org: Organization) -> None:
    with HttpServer() as web:
        m = make_monitor(org, confirmations=1)
        m.config = {"url": web.url("/binary-error")}
        m.save()
        outcome = probe("http", m.config)
    apply(m, outcome, T0)
    incident = Incident.objects.get()
    assert incident.evidence["status"] == 500 and len(incident.evidence["body"]) == 500
    text = incident_text(incident)
    assert_readable(text)
    assert "The answer is binary data, not text; the monitor's page keeps it." in text
    assert "The answer began with:" not in text
