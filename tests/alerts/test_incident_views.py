"""The incident, escalation policy and maintenance pages: who may do what, what they show,
and that changes are audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import (
    Channel,
    Delivery,
    EscalationPolicy,
    IncidentState,
    Maintenance,
)
from onwatch.alerts.services import add_channel
from onwatch.core.models import AuditEntry, Organization
from tests.support.fixtures import make_org, signed_in

# Argon2 for four members per test adds up; these tests are not about passwords.
pytestmark = pytest.mark.usefixtures("fast_passwords")

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def steps_data(
    rows: list[tuple[str, list[Channel]]], total: int = 3, initial: int = 0
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "steps-TOTAL_FORMS": str(total),
        "steps-INITIAL_FORMS": str(initial),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for i in range(total):
        after, channels = rows[i] if i < len(rows) else ("", [])
        data[f"steps-{i}-after_minutes"] = after
        data[f"steps-{i}-channels"] = [str(ch.pk) for ch in channels]
    return data


def policy_post(
    name: str, rows: list[tuple[str, list[Channel]]], total: int = 3, initial: int = 0
) -> dict[str, Any]:
    return {
        "name": name,
        "repeat_minutes": "15",
        "notify_recovery": "on",
        **steps_data(rows, total, initial),
    }


def audit(action: str) -> AuditEntry:
    return AuditEntry.objects.get(action=action)


def test_the_list_shows_open_incidents_first(org: Organization, members: Any) -> None:
    incidents.open_incident(org, "s:1", "old and over", {}, now=T0)
    incidents.resolve_incident(org, "s:1", {}, now=T0 + timedelta(minutes=5))
    incidents.open_incident(org, "s:2", "older but open", {}, now=T0 - timedelta(days=1))
    acked = incidents.open_incident(org, "s:3", "being handled", {}, now=T0)
    incidents.acknowledge(acked, "ann", now=T0)
    incidents.open_incident(org, "s:4", "held child", {}, now=T0, held="router is down")
    html = signed_in(members["viewer"]).get("/incidents/").content.decode()
    order = [html.index(t) for t in ("held child", "older but open", "being handled")]
    assert order == sorted(order) and order[-1] < html.index("old and over")
    assert "held: router is down" in html


def test_the_detail_shows_evidence_and_timeline_but_no_buttons_for_viewers(
    org: Organization, members: Any
) -> None:
    incident = incidents.open_incident(org, "s:1", "shop is down", {"error": "timeout"}, now=T0)
    incidents.add_note(incident, "bob@acme.example", "looking at the load balancer")
    client = signed_in(members["viewer"])
    html = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert "shop is down" in html and "timeout" in html
    assert "looking at the load balancer" in html and "bob@acme.example" in html
    assert "Acknowledge" not in html and "Add note" not in html and "Resolve" not in html
    assert client.post(f"/incidents/{incident.pk}/acknowledge/").status_code == 403
    assert client.post(f"/incidents/{incident.pk}/resolve/").status_code == 403
    assert client.post(f"/incidents/{incident.pk}/note/", {"text": "hi"}).status_code == 403


def test_a_deployer_acknowledges_and_it_is_audited(org: Organization, members: Any) -> None:
    incident = incidents.open_incident(org, "s:1", "shop is down", {}, now=timezone.now())
    client = signed_in(members["deployer"])
    assert "Acknowledge" in client.get(f"/incidents/{incident.pk}/").content.decode()
    assert client.get(f"/incidents/{incident.pk}/acknowledge/").status_code == 405
    r = client.post(f"/incidents/{incident.pk}/acknowledge/")
    assert r.status_code == 302 and r["Location"] == f"/incidents/{incident.pk}/"
    incident.refresh_from_db()
    assert incident.state == IncidentState.ACKNOWLEDGED
    assert incident.acknowledged_by == members["deployer"]
    entry = audit("incident-acknowledged")
    assert entry.actor == members["deployer"].email and entry.target == "shop is down"
    page = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert "escalation and reminders have stopped" in page
    assert "acknowledged" in page and members["deployer"].email in page
    # Twice: a clear message, no second audit entry.
    client.post(f"/incidents/{incident.pk}/acknowledge/")
    assert "already acknowledged" in client.get(f"/incidents/{incident.pk}/").content.decode()
    assert AuditEntry.objects.filter(action="incident-acknowledged").count() == 1


def test_a_deployer_resolves_it_the_people_told_hear_and_it_is_audited(
    org: Organization, members: Any
) -> None:
    add_channel(org, "hook", "json://127.0.0.1:9/hook")
    incident = incidents.open_incident(org, "s:1", "shop is down", {}, now=timezone.now())
    client = signed_in(members["deployer"])
    assert "Resolve" in client.get(f"/incidents/{incident.pk}/").content.decode()
    assert client.get(f"/incidents/{incident.pk}/resolve/").status_code == 405
    r = client.post(f"/incidents/{incident.pk}/resolve/")
    assert r.status_code == 302 and r["Location"] == f"/incidents/{incident.pk}/"
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED and incident.resolved_at is not None
    resolved = incident.events.get(kind="resolved")
    assert resolved.actor == members["deployer"].email
    entry = audit("incident-resolved")
    assert entry.actor == members["deployer"].email and entry.target == "shop is down"
    told = Delivery.objects.filter(channel_name="hook").order_by("pk")
    assert [d.title for d in told] == [
        "shop is down",
        f"Resolved by {members['deployer'].email}: shop is down",
    ]
    page = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert "hears that it is over" in page
    assert f'action="/incidents/{incident.pk}/resolve/"' not in page
    # Twice (a stale tab): a clear message, no second audit entry nor notice.
    client.post(f"/incidents/{incident.pk}/resolve/")
    assert "already resolved" in client.get(f"/incidents/{incident.pk}/").content.decode()
    assert AuditEntry.objects.filter(action="incident-resolved").count() == 1
    assert told.count() == 2
    # A newer incident of the same source is not closed by the old page's button.
    newer = incidents.open_incident(org, "s:1", "shop is down", {}, now=timezone.now())
    client.post(f"/incidents/{incident.pk}/resolve/")
    newer.refresh_from_db()
    assert newer.state != IncidentState.RESOLVED


def test_notes_are_added_and_an_empty_one_is_refused(org: Organization, members: Any) -> None:
    incident = incidents.open_incident(org, "s:1", "shop is down", {}, now=timezone.now())
    client = signed_in(members["deployer"])
    client.post(f"/incidents/{incident.pk}/note/", {"text": "failing over to db-2"})
    client.post(f"/incidents/{incident.pk}/note/", {"text": "   "})
    page = client.get(f"/incidents/{incident.pk}/").content.decode()
    assert "failing over to db-2" in page and "The note was empty" in page
    assert list(incident.events.filter(kind="note").values_list("text", flat=True)) == [
        "failing over to db-2"
    ]


def test_another_organizations_incident_is_not_found(org: Organization, members: Any) -> None:
    theirs = incidents.open_incident(make_org("Other"), "s:1", "theirs", {}, now=T0)
    client = signed_in(members["owner"])
    assert client.get(f"/incidents/{theirs.pk}/").status_code == 404
    assert client.post(f"/incidents/{theirs.pk}/acknowledge/").status_code == 404
    assert "theirs" not in client.get("/incidents/").content.decode()


def test_an_admin_creates_a_policy_with_steps(org: Organization, members: Any) -> None:
    mail = add_channel(org, "mail", "mailto://127.0.0.1:2525?from=a@b.example&to=c@d.example")
    hook = add_channel(org, "hook", "json://127.0.0.1:9/hook")
    client = signed_in(members["admin"])
    page = client.get("/policies/add/").content.decode()
    assert "steps-TOTAL_FORMS" in page and "mail" in page and "hook" in page
    # Rows in any order are stored earliest first; the blank row is left out.
    r = client.post("/policies/add/", policy_post("on-call", [("10", [hook]), ("0", [mail])]))
    assert r.status_code == 302 and r["Location"] == "/policies/"
    policy = EscalationPolicy.objects.get(org=org, name="on-call")
    steps = [(s.after_minutes, [c.name for c in s.channels.all()]) for s in policy.steps.all()]
    assert steps == [(0, ["mail"]), (10, ["hook"])]
    assert (policy.repeat_minutes, policy.notify_recovery) == (15, True)
    entry = audit("policy-added")
    assert entry.target == "on-call"
    assert entry.data["steps"] == ["after 0 min: mail", "after 10 min: hook"]
    listing = signed_in(members["viewer"]).get("/policies/").content.decode()
    assert "after 10 min: hook" in listing and "every 15 min" in listing


def test_editing_a_policy_drops_a_step_whose_channels_are_cleared(
    org: Organization, members: Any
) -> None:
    mail = add_channel(org, "mail", "json://127.0.0.1:9/a")
    hook = add_channel(org, "hook", "json://127.0.0.1:9/b")
    client = signed_in(members["admin"])
    client.post("/policies/add/", policy_post("p", [("0", [mail]), ("5", [hook])]))
    policy = EscalationPolicy.objects.get(name="p")
    page = client.get(f"/policies/{policy.pk}/").content.decode()
    # Two rows filled in from the policy, two spare: posted back as the page has them.
    assert 'value="5"' in page
    assert 'name="steps-INITIAL_FORMS" value="2"' in page
    assert 'name="steps-TOTAL_FORMS" value="4"' in page
    rows = [("0", [mail]), ("5", [])]
    r = client.post(f"/policies/{policy.pk}/", policy_post("p2", rows, total=4, initial=2))
    assert r.status_code == 302
    policy.refresh_from_db()
    assert policy.name == "p2" and [s.after_minutes for s in policy.steps.all()] == [0]
    assert audit("policy-changed").data["steps"] == ["after 0 min: mail"]
    client.post(f"/policies/{policy.pk}/delete/")
    assert not EscalationPolicy.objects.exists() and audit("policy-removed").target == "p2"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "Give at least one step a channel"),
        ([("", "mail")], "Say after how many minutes this step sends"),
        ([("-1", "mail")], "greater than or equal to 0"),
    ],
)
def test_a_policy_form_refuses_bad_steps(
    org: Organization, members: Any, rows: list[tuple[str, str]], message: str
) -> None:
    mail = add_channel(org, "mail", "json://127.0.0.1:9/a")
    channel_rows = [(after, [mail]) for after, _ in rows]
    r = signed_in(members["admin"]).post("/policies/add/", policy_post("p", channel_rows))
    assert r.status_code == 200 and message in r.content.decode()
    assert not EscalationPolicy.objects.exists()


def test_policies_are_for_admins(org: Organization, members: Any) -> None:
    for role, allowed in [("owner", True), ("admin", True), ("deployer", False)]:
        assert (signed_in(members[role]).get("/policies/add/").status_code == 200) is allowed
    assert signed_in(members["viewer"]).get("/policies/").status_code == 200
    assert "Add a policy" not in signed_in(members["viewer"]).get("/policies/").content.decode()


def test_a_deployer_plans_a_one_off_window_in_its_time_zone(
    org: Organization, members: Any
) -> None:
    client = signed_in(members["deployer"])
    r = client.post(
        "/maintenance/add/",
        {
            "name": "db upgrade",
            "kind": "once",
            "tz": "Europe/Prague",
            "starts_at": "2026-07-05T02:00",
            "ends_at": "2026-07-05T03:30",
            "sources": "uptime.monitor:4\n\nuptime.monitor:2\n",
            "public": "on",
        },
    )
    assert r.status_code == 302 and r["Location"] == "/maintenance/"
    m = Maintenance.objects.get(org=org)
    # 02:00 in Prague in summer (CEST, UTC+2) is 00:00 UTC.
    assert m.starts_at == datetime(2026, 7, 5, 0, 0, tzinfo=UTC)
    assert m.ends_at == datetime(2026, 7, 5, 1, 30, tzinfo=UTC)
    assert m.sources == ["uptime.monitor:2", "uptime.monitor:4"] and m.cron == ""
    entry = audit("maintenance-added")
    assert entry.data["when"] == "2026-07-05 02:00 to 2026-07-05 03:30 (Europe/Prague)"
    # The edit form shows the times in the window's own zone.
    assert 'value="2026-07-05T02:00"' in client.get(f"/maintenance/{m.pk}/").content.decode()


def test_a_recurring_window_is_saved_and_an_invalid_cron_refused(
    org: Organization, members: Any
) -> None:
    client = signed_in(members["deployer"])
    base = {"name": "weekly", "kind": "cron", "tz": "UTC", "duration_minutes": "60"}
    r = client.post("/maintenance/add/", {**base, "cron": "0 25 * * *"})
    assert r.status_code == 200
    assert "is not a valid cron expression" in r.content.decode()
    r = client.post("/maintenance/add/", {**base, "cron": "every sunday"})
    assert "is not a cron expression; use five fields" in r.content.decode()
    r = client.post("/maintenance/add/", {**base, "cron": "0 2 * * 0", "tz": "Mars/Base"})
    assert "is not a time zone" in r.content.decode()
    assert not Maintenance.objects.exists()
    r = client.post("/maintenance/add/", {**base, "cron": "0 2 * * 0"})
    assert r.status_code == 302
    m = Maintenance.objects.get()
    assert (m.cron, m.duration_minutes, m.starts_at, m.public) == ("0 2 * * 0", 60, None, False)
    r = client.post(f"/maintenance/{m.pk}/", {**base, "name": "sundays", "cron": "0 3 * * 0"})
    m.refresh_from_db()
    assert (m.name, m.cron) == ("sundays", "0 3 * * 0")
    assert audit("maintenance-changed").data["when"] == "0 3 * * 0 (UTC) for 60 min"
    client.post(f"/maintenance/{m.pk}/delete/")
    assert not Maintenance.objects.exists() and audit("maintenance-removed").target == "sundays"


def test_a_one_off_window_must_end_after_it_starts(org: Organization, members: Any) -> None:
    r = signed_in(members["deployer"]).post(
        "/maintenance/add/",
        {
            "name": "x",
            "kind": "once",
            "tz": "UTC",
            "starts_at": "2026-07-05T02:00",
            "ends_at": "2026-07-05T01:00",
        },
    )
    assert "The window must end after it starts." in r.content.decode()


def test_the_maintenance_list_shows_what_is_in_progress(org: Organization, members: Any) -> None:
    now = timezone.now()
    Maintenance.objects.create(
        org=org, name="now", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1)
    )
    client = signed_in(members["viewer"])
    html = client.get("/maintenance/").content.decode()
    assert "in progress" in html and "Plan a window" not in html
    assert client.get("/maintenance/add/").status_code == 403


def test_the_navigation_links_the_new_pages(org: Organization, members: Any) -> None:
    html = signed_in(members["viewer"]).get("/incidents/").content.decode()
    for href in ('href="/incidents/"', 'href="/policies/"', 'href="/maintenance/"'):
        assert href in html
