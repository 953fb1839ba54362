"""The typed JSON API: monitors, escalation policies, incidents and maintenance windows,
behind scoped tokens, inside one organization, with every change in the audit log."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.alerts import incidents, services
from onwatch.alerts.models import EscalationPolicy, Incident, IncidentState, Maintenance
from onwatch.core.models import ApiToken, AuditEntry, Membership, Organization
from onwatch.core.roles import SCOPES, Role
from onwatch.core.services import issue_token, revoke_token
from onwatch.uptime import state
from onwatch.uptime.models import Monitor, State, StateChange
from tests.support.fixtures import make_member, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

SITE = {"url": "https://shop.example.com/health"}


class Api:
    """A client holding one bearer token."""

    def __init__(self, raw: str | None) -> None:
        headers = {"authorization": f"Bearer {raw}"} if raw is not None else {}
        self.client = Client(headers=headers)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = "" if body is None else body
        return self.client.generic(
            method,
            f"/api/v1/{path}",
            data=data if isinstance(data, str) else _json(data),
            content_type="application/json",
        )


def _json(data: Any) -> str:
    return json.dumps(data)


def api_for(user: Any, scopes: list[str] | None = None, days: int = 30) -> Api:
    org = Membership.objects.filter(user=user).first()
    assert org is not None
    return Api(issue_token(user, org.org, "test", scopes or list(SCOPES), days).raw)


def actions(org: Organization) -> list[str]:
    return list(AuditEntry.objects.filter(org=org).order_by("seq").values_list("action", flat=True))


@pytest.fixture
def owner(members: dict[str, Any]) -> Api:
    return api_for(members["owner"])


# --- monitors ------------------------------------------------------------------------------


def test_a_monitor_is_created_read_listed_changed_and_removed(
    org: Organization, owner: Api
) -> None:
    made = owner("POST", "monitors/", {"name": "shop", "kind": "http", "config": SITE})
    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["name"], body["state"], body["interval"], body["ping_url"]) == (
        "shop",
        "pending",
        60,
        None,
    )
    pk = body["id"]
    assert Monitor.objects.get(pk=pk).config == SITE

    assert owner("GET", f"monitors/{pk}/").json()["name"] == "shop"
    changed = owner(
        "PATCH",
        f"monitors/{pk}/",
        {"interval": 300, "config": {"url": SITE["url"], "method": "head"}},
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["interval"] == 300
    # Stored as specs.validate normalizes it: the method in capitals.
    assert Monitor.objects.get(pk=pk).config == {"url": SITE["url"], "method": "HEAD"}
    assert changed.json()["name"] == "shop"  # untouched fields keep their values

    gone = owner("DELETE", f"monitors/{pk}/")
    assert gone.status_code == 204
    assert not Monitor.objects.filter(pk=pk).exists()
    assert owner("GET", f"monitors/{pk}/").status_code == 404
    assert actions(org)[-3:] == ["monitor-added", "monitor-changed", "monitor-removed"]
    change = AuditEntry.objects.get(action="monitor-changed")
    assert change.data["changed"] == ["config", "interval"] and change.actor == "owner@acme.example"


def test_the_list_filters_by_kind_state_enabled_and_name_and_pages(
    org: Organization, owner: Api
) -> None:
    Monitor.objects.create(org=org, name="shop front", kind="http", config=SITE, state=State.UP)
    Monitor.objects.create(org=org, name="db", kind="tcp", state=State.DOWN)
    Monitor.objects.create(org=org, name="backup", kind="heartbeat", enabled=False)

    def names(query: str) -> list[str]:
        r = owner("GET", f"monitors/{query}")
        assert r.status_code == 200, r.content
        return [m["name"] for m in r.json()["monitors"]]

    assert names("") == ["backup", "db", "shop front"]
    assert names("?kind=tcp") == ["db"]
    assert names("?state=up") == ["shop front"]
    assert names("?enabled=false") == ["backup"]
    assert names("?q=FRONT") == ["shop front"]
    assert names("?limit=1&offset=1") == ["db"]
    bad = owner("GET", "monitors/?kind=smtp")
    assert bad.status_code == 422 and "'kind'" in bad.json()["error"]


def test_kind_specific_settings_are_refused_with_the_spec_message(owner: Api) -> None:
    cases = [
        ({"kind": "http", "config": {"url": "ftp://x"}}, "'url' must be a full http://"),
        ({"kind": "tcp", "config": {"host": "db"}}, "'port' is required for a TCP check"),
        ({"kind": "dns", "config": {"name": "x.org", "colour": 1}}, "'colour' is not a setting"),
        (
            {"kind": "heartbeat", "config": {"period": 3600, "cron": "0 3 * * *"}},
            "give either 'period' (seconds) or 'cron', not both",
        ),
    ]
    for fields, words in cases:
        r = owner("POST", "monitors/", {"name": "x", **fields})
        assert r.status_code == 422, (fields, r.content)
        assert words in r.json()["error"], r.json()
    assert not Monitor.objects.exists()


def test_bad_fields_get_a_422_that_names_them(org: Organization, owner: Api) -> None:
    m = Monitor.objects.create(org=org, name="shop", kind="http", config=SITE)
    cases = [
        (
            "POST",
            "monitors/",
            {"name": "a", "kind": "http", "config": SITE, "interval": 1},
            "'interval'",
        ),
        (
            "POST",
            "monitors/",
            {"name": "a", "kind": "http", "config": SITE, "colour": 1},
            "'colour'",
        ),
        ("POST", "monitors/", {"name": "a\x00b", "kind": "http", "config": SITE}, "NUL"),
        ("POST", "monitors/", {"kind": "http"}, "'name' is required"),
        (
            "POST",
            "monitors/",
            {"name": "shop", "kind": "http", "config": SITE},
            "already called 'shop'",
        ),
        (
            "PATCH",
            f"monitors/{m.pk}/",
            {"timeout": 120, "interval": 60},
            "'timeout' must be shorter",
        ),
        ("PATCH", f"monitors/{m.pk}/", {"kind": "tcp"}, "'host' is required"),
        ("PATCH", f"monitors/{m.pk}/", {"slug": "no spaces"}, "'slug'"),
    ]
    for method, path, body, words in cases:
        r = owner(method, path, body)
        assert r.status_code == 422 and words in r.json()["error"], (body, r.content)
    assert owner("POST", "monitors/", "{not json").status_code == 400
    m.refresh_from_db()
    assert (m.kind, m.timeout, m.slug) == ("http", 10, "")


def test_parents_and_policies_come_from_the_organization_and_never_form_a_circle(
    org: Organization, owner: Api
) -> None:
    theirs = make_org("Other")
    foreign_policy = EscalationPolicy.objects.create(org=theirs, name="theirs")
    foreign_monitor = Monitor.objects.create(org=theirs, name="theirs", kind="tcp")
    policy = EscalationPolicy.objects.create(org=org, name="on call")
    base = {"kind": "tcp", "config": {"host": "db", "port": 5432}}
    r = owner("POST", "monitors/", {"name": "a", **base, "policy_id": foreign_policy.pk})
    assert r.status_code == 422 and "No escalation policy" in r.json()["error"]
    r = owner("POST", "monitors/", {"name": "a", **base, "parent_id": foreign_monitor.pk})
    assert r.status_code == 422 and "No monitor" in r.json()["error"]

    a = owner("POST", "monitors/", {"name": "a", **base, "policy_id": policy.pk}).json()
    b = owner("POST", "monitors/", {"name": "b", **base, "parent_id": a["id"]}).json()
    assert (a["policy_id"], b["parent_id"]) == (policy.pk, a["id"])
    circle = owner("PATCH", f"monitors/{a['id']}/", {"parent_id": b["id"]})
    assert circle.status_code == 422 and "cannot depend on itself" in circle.json()["error"]
    itself = owner("PATCH", f"monitors/{a['id']}/", {"parent_id": a["id"]})
    assert itself.status_code == 422
    cleared = owner("PATCH", f"monitors/{b['id']}/", {"parent_id": None})
    assert cleared.json()["parent_id"] is None


def test_pause_and_resume_change_state_record_it_and_are_idempotent(
    org: Organization, owner: Api
) -> None:
    m = Monitor.objects.create(org=org, name="shop", kind="http", config=SITE, state=State.UP)
    down = incidents.open_incident(org, state.source(m), "shop is down", {})
    paused = owner("POST", f"monitors/{m.pk}/pause/")
    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["enabled"]) == ("paused", False)
    # A paused monitor cannot recover: its incident is resolved, saying why.
    down.refresh_from_db()
    assert down.state == IncidentState.RESOLVED
    assert down.events.filter(kind="note", text="shop was paused.").exists()
    assert owner("POST", f"monitors/{m.pk}/pause/").json()["state"] == "paused"
    resumed = owner("POST", f"monitors/{m.pk}/resume/").json()
    assert (resumed["state"], resumed["enabled"]) == ("pending", True)
    changes = list(
        StateChange.objects.filter(monitor=m).order_by("at", "id").values_list("old", "new")
    )
    assert changes == [("up", "paused"), ("paused", "pending")]
    assert actions(org)[-2:] == ["monitor-paused", "monitor-resumed"]


def test_a_heartbeat_tells_its_ping_url(owner: Api) -> None:
    r = owner(
        "POST", "monitors/", {"name": "nightly", "kind": "heartbeat", "config": {"period": 86400}}
    )
    assert r.status_code == 201, r.content
    m = Monitor.objects.get(pk=r.json()["id"])
    assert r.json()["ping_url"].endswith(f"/ping/{m.ping_id}")
    assert (m.config, m.confirmations) == ({"period": 86400}, 1)


# --- tokens and organizations -----------------------------------------------------------------


def test_tokens_are_checked_by_the_rules_of_the_plain_api(
    org: Organization, members: dict[str, Any]
) -> None:
    m = Monitor.objects.create(org=org, name="shop", kind="http", config=SITE)
    path = f"monitors/{m.pk}/"
    anonymous = Api(None)("GET", path)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Bearer"
    assert "Bearer" in anonymous.json()["error"]
    assert Api("ow_nope_nope")("GET", path).status_code == 401

    deployer = members["deployer"]
    revoked = issue_token(deployer, org, "old", ["monitors:read"], 30)
    revoke_token(revoked.token)
    assert Api(revoked.raw)("GET", path).status_code == 401
    expired = issue_token(deployer, org, "expired", ["monitors:read"], 30)
    ApiToken.objects.filter(pk=expired.token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert Api(expired.raw)("GET", path).json()["error"].startswith("This API token is unknown")

    reading = issue_token(deployer, org, "reader", ["monitors:read"], 30)
    reader = Api(reading.raw)
    assert reader("GET", path).status_code == 200
    lacking = reader("DELETE", path)
    assert lacking.status_code == 403 and "monitors:write" in lacking.json()["error"]

    writer = api_for(deployer, ["monitors:write"])
    assert writer("POST", f"{path}pause/").status_code == 200
    Membership.objects.filter(user=deployer).update(role=Role.VIEWER)
    demoted = writer("POST", f"{path}resume/")
    assert demoted.status_code == 403 and "no longer" in demoted.json()["error"]
    m.refresh_from_db()
    assert m.state == State.PAUSED
    reading.token.refresh_from_db()
    assert reading.token.last_used_at is not None


def test_a_token_sees_only_its_own_organization(org: Organization, owner: Api) -> None:
    theirs = make_org("Other")
    make_member(theirs, Role.OWNER, "owner@other.example")
    monitor = Monitor.objects.create(org=theirs, name="theirs", kind="tcp")
    policy = EscalationPolicy.objects.create(org=theirs, name="theirs")
    incident = Incident.objects.create(org=theirs, source="x", title="theirs down")
    window = Maintenance.objects.create(
        org=theirs, name="theirs", starts_at=timezone.now(), ends_at=timezone.now()
    )
    mine = Monitor.objects.create(org=org, name="mine", kind="tcp")
    for method, path in [
        ("GET", f"monitors/{monitor.pk}/"),
        ("PATCH", f"monitors/{monitor.pk}/"),
        ("DELETE", f"monitors/{monitor.pk}/"),
        ("POST", f"monitors/{monitor.pk}/pause/"),
        ("GET", f"policies/{policy.pk}/"),
        ("DELETE", f"policies/{policy.pk}/"),
        ("GET", f"incidents/{incident.pk}/"),
        ("POST", f"incidents/{incident.pk}/acknowledge/"),
        ("POST", f"incidents/{incident.pk}/notes/"),
        ("GET", f"maintenance/{window.pk}/"),
        ("DELETE", f"maintenance/{window.pk}/"),
    ]:
        body = {"text": "hi"} if path.endswith("notes/") else ({} if method == "PATCH" else None)
        r = owner(method, path, body)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "in this organization" in r.json()["error"]
    assert [m["id"] for m in owner("GET", "monitors/").json()["monitors"]] == [mine.pk]
    assert owner("GET", "policies/").json()["policies"] == []
    assert owner("GET", "incidents/").json()["incidents"] == []
    assert owner("GET", "maintenance/").json()["windows"] == []
    assert Monitor.objects.filter(pk=monitor.pk, enabled=True).exists()
    incident.refresh_from_db()
    assert incident.state == IncidentState.OPEN and not incident.events.exists()


# --- escalation policies -------------------------------------------------------------------


def test_policies_are_created_with_sorted_steps_replaced_and_removed(
    org: Organization, owner: Api
) -> None:
    mail = services.add_channel(org, "mail", "json://127.0.0.1:9/mail")
    hook = services.add_channel(org, "hook", "json://127.0.0.1:9/hook")
    foreign = services.add_channel(make_org("Other"), "theirs", "json://127.0.0.1:9/x")
    body = {
        "name": "on call",
        "repeat_minutes": 30,
        "steps": [
            {"after_minutes": 15, "channel_ids": [hook.pk]},
            {"after_minutes": 0, "channel_ids": [mail.pk]},
        ],
    }
    made = owner("POST", "policies/", body)
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    assert made.json()["steps"] == [
        {"after_minutes": 0, "channel_ids": [mail.pk]},
        {"after_minutes": 15, "channel_ids": [hook.pk]},
    ]
    again = owner("POST", "policies/", {**body, "name": "ON CALL"})
    assert again.status_code == 422 and "already called" in again.json()["error"]
    stolen = owner(
        "POST",
        "policies/",
        {**body, "name": "x", "steps": [{"after_minutes": 0, "channel_ids": [foreign.pk]}]},
    )
    assert stolen.status_code == 422 and f"No channel {foreign.pk}" in stolen.json()["error"]
    empty = owner("POST", "policies/", {**body, "name": "y", "steps": []})
    assert empty.status_code == 422 and "'steps'" in empty.json()["error"]

    replaced = owner(
        "PUT",
        f"policies/{pk}/",
        {"name": "day", "steps": [{"after_minutes": 5, "channel_ids": [hook.pk, mail.pk]}]},
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json() == {
        "id": pk,
        "name": "day",
        "repeat_minutes": 0,
        "notify_recovery": True,
        "steps": [{"after_minutes": 5, "channel_ids": sorted([hook.pk, mail.pk])}],
    }
    assert owner("GET", "policies/").json()["policies"] == [replaced.json()]
    assert owner("DELETE", f"policies/{pk}/").status_code == 204
    assert not EscalationPolicy.objects.filter(pk=pk).exists()
    assert actions(org)[-3:] == ["policy-added", "policy-changed", "policy-removed"]
    assert AuditEntry.objects.get(action="policy-changed").data["steps"] == [
        "after 5 min: hook, mail"
    ]


# --- incidents -------------------------------------------------------------------------------


def test_incidents_are_listed_read_with_their_timeline_acknowledged_and_noted(
    org: Organization, members: dict[str, Any], owner: Api
) -> None:
    opened = timezone.now() - timedelta(minutes=5)
    down = incidents.open_incident(
        org, "uptime.monitor:1", "shop is down", {"status": 502}, now=opened
    )
    old = Incident.objects.create(org=org, source="x", title="old", state=IncidentState.RESOLVED)
    listed = owner("GET", "incidents/").json()["incidents"]
    assert [i["id"] for i in listed] == [old.pk, down.pk]  # newest first
    assert [i["id"] for i in owner("GET", "incidents/?state=open").json()["incidents"]] == [down.pk]

    responder = api_for(members["deployer"], ["incidents:read", "incidents:write"])
    acked = responder("POST", f"incidents/{down.pk}/acknowledge/")
    assert acked.status_code == 200, acked.content
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "deployer@acme.example"
    twice = responder("POST", f"incidents/{down.pk}/acknowledge/")
    assert twice.status_code == 409 and "already acknowledged" in twice.json()["error"]

    noted = responder("POST", f"incidents/{down.pk}/notes/", {"text": "  restarting the pool  "})
    assert noted.status_code == 201
    timeline = owner("GET", f"incidents/{down.pk}/").json()["timeline"]
    assert [e["kind"] for e in timeline] == ["opened", "acknowledged", "note"]
    assert timeline[-1]["text"] == "restarting the pool"
    assert timeline[-1]["actor"] == "deployer@acme.example"
    blank = responder("POST", f"incidents/{down.pk}/notes/", {"text": "   "})
    assert blank.status_code == 422
    assert actions(org)[-2:] == ["incident-acknowledged", "incident-note-added"]


# --- maintenance windows -------------------------------------------------------------------------


def test_maintenance_windows_one_off_and_recurring(org: Organization, owner: Api) -> None:
    made = owner(
        "POST",
        "maintenance/",
        {
            "name": "db upgrade",
            "tz": "Europe/Prague",
            "starts_at": "2030-01-01T10:00",
            "ends_at": "2030-01-01T11:30",
            "sources": ["uptime.monitor:1"],
        },
    )
    assert made.status_code == 201, made.content
    assert (made.json()["starts_at"], made.json()["ends_at"]) == (
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:30:00Z",
    )
    assert made.json()["active"] is False

    always = owner(
        "POST", "maintenance/", {"name": "nightly", "cron": "* * * * *", "duration_minutes": 5}
    )
    assert always.status_code == 201 and always.json()["active"] is True
    for body, words in [
        ({"name": "x", "cron": "61 * * * *", "duration_minutes": 5}, "not a valid cron"),
        ({"name": "x", "cron": "0 3 * * *"}, "'duration_minutes': Say how many minutes"),
        (
            {"name": "x", "starts_at": "2030-01-01T10:00", "ends_at": "2030-01-01T09:00"},
            "'ends_at': The window must end after it starts",
        ),
        (
            {"name": "x", "tz": "Mars/Base", "cron": "0 3 * * *", "duration_minutes": 5},
            "not a time zone",
        ),
        (
            {"name": "x", "starts_at": "0001-01-01T00:00:00+01:00", "ends_at": "2030-01-01T09:00"},
            "between the years",
        ),
    ]:
        r = owner("POST", "maintenance/", body)
        assert r.status_code == 422 and words in r.json()["error"], (body, r.content)

    pk = made.json()["id"]
    replaced = owner(
        "PUT",
        f"maintenance/{pk}/",
        {"name": "db upgrade", "cron": "0 2 * * 0", "duration_minutes": 60, "public": False},
    )
    assert replaced.status_code == 200, replaced.content
    assert (replaced.json()["starts_at"], replaced.json()["cron"], replaced.json()["public"]) == (
        None,
        "0 2 * * 0",
        False,
    )
    assert [w["name"] for w in owner("GET", "maintenance/").json()["windows"]] == [
        "nightly",
        "db upgrade",
    ]
    assert owner("DELETE", f"maintenance/{pk}/").status_code == 204
    assert list(Maintenance.objects.values_list("name", flat=True)) == ["nightly"]
    assert actions(org)[-4:] == [
        "maintenance-added",
        "maintenance-added",
        "maintenance-changed",
        "maintenance-removed",
    ]


# --- the schema --------------------------------------------------------------------------------


def test_the_openapi_schema_is_public_and_names_each_operations_scope() -> None:
    r = Client().get("/api/v1/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    operations = [
        (path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 20
    for path, method, op in operations:
        assert path.startswith("/api/v1/"), path
        assert op["x-onwatch-scope"] in SCOPES, (path, method)
        assert op["security"], (path, method)
        assert op["x-onwatch-scope"] in op["description"]
    assert ("/api/v1/monitors/{monitor_id}/", "patch") in {(p, m) for p, m, _ in operations}
    assert Client().get("/api/v1/").json() == {"openapi": "/api/v1/openapi.json"}


def test_readers_get_header_values_bodies_and_url_passwords_hidden_writers_get_them_whole(
    org: Organization, members: dict[str, Any]
) -> None:
    config = {
        "url": "https://probe:pa55word@shop.example.com/health",
        "method": "POST",
        "headers": {"Authorization": "Bearer s3cret-token", "Accept": "text/html"},
        "body": '{"login": "s3cret-body"}',
    }
    made = api_for(members["deployer"])(
        "POST", "monitors/", {"name": "shop", "kind": "http", "config": config}
    )
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    assert made.json()["config"]["headers"]["Authorization"] == "Bearer s3cret-token"
    readers = [
        api_for(members["viewer"], ["monitors:read"]),
        # A deployer's token without the write scope reads like a viewer.
        api_for(members["deployer"], ["monitors:read"]),
    ]
    for reader in readers:
        for answer in (
            reader("GET", f"monitors/{pk}/").json(),
            reader("GET", "monitors/").json()["monitors"][0],
        ):
            text = json.dumps(answer)
            assert "s3cret" not in text and "pa55word" not in text
            assert answer["config"]["headers"] == {
                "Authorization": "(hidden)",
                "Accept": "(hidden)",
            }
            assert answer["config"]["url"] == "https://probe:(hidden)@shop.example.com/health"
            assert answer["config"]["body"] == "(hidden)"
    whole = api_for(members["deployer"], ["monitors:read", "monitors:write"])(
        "GET", f"monitors/{pk}/"
    )
    assert whole.json()["config"]["headers"]["Authorization"] == "Bearer s3cret-token"
    assert Monitor.objects.get(pk=pk).config["body"] == '{"login": "s3cret-body"}'
