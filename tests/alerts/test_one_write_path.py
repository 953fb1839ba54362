"""One write path: the same change made through every surface an object has (the pages,
the API, the CLI) leaves the same rows and the same audit entry, by the truthful actor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Model
from django.test import Client

from onwatch.alerts import incidents
from onwatch.alerts.models import (
    Channel,
    Delivery,
    EscalationPolicy,
    Incident,
    Maintenance,
)
from onwatch.alerts.services import add_channel
from onwatch.core.models import AuditEntry, Membership, Organization
from onwatch.core.roles import SCOPES
from onwatch.core.services import issue_token
from tests.support.child import alerts as child_alerts
from tests.support.child import call
from tests.support.fixtures import signed_in
from tests.support.procs import isolated, run
from tests.support.receivers import WebhookReceiver, add_channels

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

# The address Django's test client comes from, which the audit log keeps.
CLIENT_IP = "127.0.0.1"


class Api:
    """A client holding a token with every scope of `user`'s role."""

    def __init__(self, user: Any) -> None:
        org = Membership.objects.get(user=user).org
        raw = issue_token(user, org, "surfaces", list(SCOPES), 30).raw
        self.client = Client(headers={"authorization": f"Bearer {raw}"})

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = "" if body is None else json.dumps(body)
        r = self.client.generic(method, f"/api/v1/{path}", data, "application/json")
        assert r.status_code < 300, (method, path, r.status_code, r.content)
        return r


def last_entry(action: str) -> dict[str, Any]:
    """The newest audit entry of `action`, as people read it (no seq, time or hash)."""
    e = AuditEntry.objects.filter(action=action).order_by("-seq").first()
    assert e is not None, f"no {action!r} entry"
    return {"org": e.org_id, "actor": e.actor, "ip": e.ip, "target": e.target, "data": e.data}


def entries(actions: list[str]) -> dict[str, dict[str, Any]]:
    return {a: last_entry(a) for a in actions}


def fields(row: Model, names: list[str]) -> dict[str, Any]:
    return {n: getattr(row, n) for n in names}


def person(user: Any) -> dict[str, str]:
    return {"actor": user.get_username(), "ip": CLIENT_IP}


# --- escalation policies ---------------------------------------------------------------------


def policy_row(org: Organization) -> dict[str, Any]:
    p = EscalationPolicy.objects.get(org=org)
    steps = [
        (s.position, s.after_minutes, sorted(c.name for c in s.channels.all()))
        for s in p.steps.all()
    ]
    return fields(p, ["name", "repeat_minutes", "notify_recovery"]) | {"steps": steps}


def policy_form(name: str, rows: list[tuple[int, list[Channel]]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "repeat_minutes": "30",
        "steps-TOTAL_FORMS": str(len(rows)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }  # notify_recovery left unticked: False
    for i, (after, channels) in enumerate(rows):
        data[f"steps-{i}-after_minutes"] = str(after)
        data[f"steps-{i}-channels"] = [str(c.pk) for c in channels]
    return data


def policy_body(name: str, rows: list[tuple[int, list[Channel]]]) -> dict[str, Any]:
    steps = [{"after_minutes": a, "channel_ids": [c.pk for c in cs]} for a, cs in rows]
    return {"name": name, "repeat_minutes": 30, "notify_recovery": False, "steps": steps}


POLICY_ACTIONS = ["policy-added", "policy-changed", "policy-removed"]


def test_a_policy_added_changed_and_removed_on_the_page_or_by_the_api_is_the_same(
    org: Organization, members: dict[str, Any]
) -> None:
    mail = add_channel(org, "mail", "json://127.0.0.1:9/mail")
    hook = add_channel(org, "hook", "json://127.0.0.1:9/hook")
    # Out of order, and a name with spaces around it: both surfaces sort and trim.
    first = [(15, [hook]), (0, [mail])]
    then = [(5, [hook, mail]), (60, [mail])]
    admin = members["admin"]

    page = signed_in(admin)
    assert page.post("/policies/add/", policy_form("  on call ", first)).status_code == 302
    pk = EscalationPolicy.objects.get(org=org).pk
    added = policy_row(org)
    assert page.post(f"/policies/{pk}/", policy_form("day", then)).status_code == 302
    changed = policy_row(org)
    assert page.post(f"/policies/{pk}/delete/").status_code == 302
    by_page = entries(POLICY_ACTIONS)

    api = Api(admin)
    pk = api("POST", "policies/", policy_body("  on call ", first)).json()["id"]
    assert policy_row(org) == added
    api("PUT", f"policies/{pk}/", policy_body("day", then))
    assert policy_row(org) == changed
    api("DELETE", f"policies/{pk}/")
    assert not EscalationPolicy.objects.exists()
    by_api = entries(POLICY_ACTIONS)

    assert by_api == by_page
    assert added == {
        "name": "on call",
        "repeat_minutes": 30,
        "notify_recovery": False,
        "steps": [(0, 0, ["mail"]), (1, 15, ["hook"])],
    }
    assert by_page["policy-changed"] == {
        "org": org.pk,
        **person(admin),
        "target": "day",
        "data": {
            "repeat_minutes": 30,
            "notify_recovery": False,
            "steps": ["after 5 min: hook, mail", "after 60 min: mail"],
        },
    }


def test_a_policy_name_in_use_is_refused_in_the_same_words(
    org: Organization, members: dict[str, Any]
) -> None:
    mail = add_channel(org, "mail", "json://127.0.0.1:9/mail")
    api = Api(members["admin"])
    api("POST", "policies/", policy_body("on call", [(0, [mail])]))
    page = signed_in(members["admin"]).post("/policies/add/", policy_form("ON CALL", [(0, [mail])]))
    body = policy_body("ON CALL", [(0, [mail])])
    refused = api.client.post("/api/v1/policies/", body, content_type="application/json")
    assert refused.status_code == 422
    words = "Another policy is already called &#x27;ON CALL&#x27;; pick another name."
    assert words in page.content.decode()
    assert refused.json()["error"] == (
        "'name': Another policy is already called 'ON CALL'; pick another name."
    )
    assert EscalationPolicy.objects.count() == 1


# --- maintenance windows -------------------------------------------------------------------------

WINDOW_FIELDS = [
    "name",
    "sources",
    "starts_at",
    "ends_at",
    "cron",
    "tz",
    "duration_minutes",
    "public",
]
WINDOW_ACTIONS = ["maintenance-added", "maintenance-changed", "maintenance-removed"]


def window_row(org: Organization) -> dict[str, Any]:
    return fields(Maintenance.objects.get(org=org), WINDOW_FIELDS)


def test_a_window_added_changed_and_removed_on_the_page_or_by_the_api_is_the_same(
    org: Organization, members: dict[str, Any]
) -> None:
    deployer = members["deployer"]
    once = {"name": "db upgrade", "tz": "Europe/Prague", "public": True}
    sources = ["uptime.monitor:4", " uptime.monitor:2 ", "uptime.monitor:4"]
    weekly = {"name": "sundays", "tz": "UTC", "cron": "0 2 * * 0", "public": False}

    page = signed_in(deployer)
    form = once | {"kind": "once", "starts_at": "2030-07-05T02:00", "ends_at": "2030-07-05T03:30"}
    form |= {"sources": "\n".join(sources) + "\n\n", "public": "on"}
    assert page.post("/maintenance/add/", form).status_code == 302
    pk = Maintenance.objects.get(org=org).pk
    added = window_row(org)
    form = weekly | {"kind": "cron", "duration_minutes": "60", "sources": ""}
    del form["public"]  # unticked
    assert page.post(f"/maintenance/{pk}/", form).status_code == 302
    changed = window_row(org)
    assert page.post(f"/maintenance/{pk}/delete/").status_code == 302
    by_page = entries(WINDOW_ACTIONS)

    api = Api(deployer)
    body = once | {"starts_at": "2030-07-05T02:00", "ends_at": "2030-07-05T03:30"}
    pk = api("POST", "maintenance/", body | {"sources": sources}).json()["id"]
    assert window_row(org) == added
    api("PUT", f"maintenance/{pk}/", weekly | {"duration_minutes": 60})
    assert window_row(org) == changed
    api("DELETE", f"maintenance/{pk}/")
    by_api = entries(WINDOW_ACTIONS)

    assert by_api == by_page
    assert added["sources"] == ["uptime.monitor:2", "uptime.monitor:4"]
    assert (added["starts_at"], added["duration_minutes"]) == (
        datetime.fromisoformat("2030-07-05T00:00Z"),
        0,
    )
    assert changed["starts_at"] is None and changed["cron"] == "0 2 * * 0"
    assert by_page["maintenance-added"] == {
        "org": org.pk,
        **person(deployer),
        "target": "db upgrade",
        "data": {
            "when": "2030-07-05 02:00 to 2030-07-05 03:30 (Europe/Prague)",
            "sources": ["uptime.monitor:2", "uptime.monitor:4"],
            "public": True,
        },
    }


@pytest.mark.parametrize(
    ("times", "field", "words"),
    [
        (
            ("2030-07-05T02:00", "2030-07-05T01:00"),
            "ends_at",
            "The window must end after it starts.",
        ),
        (("1999-12-31T23:00", "2030-07-05T01:00"), "starts_at", "between the years 2000 and 2200"),
    ],
)
def test_a_bad_window_is_refused_by_both_in_the_same_words(
    org: Organization,
    members: dict[str, Any],
    times: tuple[str, str],
    field: str,
    words: str,
) -> None:
    when = {"name": "x", "tz": "UTC", "starts_at": times[0], "ends_at": times[1]}
    page = signed_in(members["deployer"]).post("/maintenance/add/", when | {"kind": "once"})
    api = Api(members["deployer"])
    r = api.client.post("/api/v1/maintenance/", when, content_type="application/json")
    assert page.status_code == 200 and words in page.content.decode()
    assert r.status_code == 422 and r.json()["error"].startswith(f"'{field}': ")
    assert words in r.json()["error"]
    assert not Maintenance.objects.exists()


# --- incidents ---------------------------------------------------------------------------


def incident_row(incident: Incident) -> dict[str, Any]:
    incident.refresh_from_db()
    events = [(e.kind, e.actor, e.text) for e in incident.events.all()]
    row = fields(incident, ["title", "state", "acknowledged_by", "next_action_at"])
    return row | {"events": events}


def test_acknowledging_and_noting_an_incident_on_the_page_or_by_the_api_is_the_same(
    org: Organization, members: dict[str, Any]
) -> None:
    deployer = members["deployer"]
    on_page = incidents.open_incident(org, "uptime.monitor:1", "shop is down", {})
    by_api = incidents.open_incident(org, "uptime.monitor:2", "shop is down", {})
    assert on_page is not None and by_api is not None
    actions = ["incident-acknowledged", "incident-note-added"]

    page = signed_in(deployer)
    assert page.post(f"/incidents/{on_page.pk}/acknowledge/").status_code == 302
    assert page.post(f"/incidents/{on_page.pk}/note/", {"text": " on it "}).status_code == 302
    seen_page = entries(actions)

    api = Api(deployer)
    api("POST", f"incidents/{by_api.pk}/acknowledge/")
    api("POST", f"incidents/{by_api.pk}/notes/", {"text": " on it "})
    seen_api = entries(actions)

    assert incident_row(by_api) == incident_row(on_page)
    assert incident_row(on_page)["events"] == [
        ("opened", "", "shop is down"),
        ("acknowledged", deployer.get_username(), ""),
        ("note", deployer.get_username(), "on it"),
    ]
    for action in actions:
        assert seen_page[action]["data"] == {"id": on_page.pk}
        assert seen_api[action]["data"] == {"id": by_api.pk}
        page_entry, api_entry = seen_page[action], seen_api[action]
        assert page_entry | {"data": None} == api_entry | {"data": None}
        assert page_entry["actor"] == deployer.get_username() and page_entry["ip"] == CLIENT_IP


# --- channels ------------------------------------------------------------------------------------

DELIVERY_FIELDS = ["channel_name", "title", "body", "is_test", "notify_type"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with isolated(tmp_path, migrated=True) as env:
        yield env


def test_a_channel_tested_on_the_page_or_by_the_cli_is_the_same(
    org: Organization, members: dict[str, Any], env: dict[str, str]
) -> None:
    with WebhookReceiver() as hooks:
        page = signed_in(members["admin"])
        form = {"name": " ops ", "url": hooks.url("/in")}
        assert page.post("/channels/add/", form).status_code == 302
        channel = Channel.objects.get(org=org)
        assert page.post(f"/channels/{channel.pk}/test/").status_code == 302
        on_page = fields(Delivery.objects.get(org=org), DELIVERY_FIELDS)
        tested_on_page = last_entry("channel-tested")

        add_channels(env, {"ops": hooks.url("/in")})
        done = run(["notify", "test"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        from_cli = json.loads(call(child_alerts.test_deliveries, env, "Acme"))

    assert channel.name == "ops" and channel.created_by == members["admin"]
    assert last_entry("channel-added") == {
        "org": org.pk,
        **person(members["admin"]),
        "target": "ops",
        "data": {"service": "json"},
    }
    assert from_cli["deliveries"] == [on_page]
    assert from_cli["tested"] == {"actor": "cli", "ip": "", "target": "ops", "data": {}}
    assert tested_on_page == {
        "org": org.pk,
        **person(members["admin"]),
        "target": "ops",
        "data": {},
    }
