"""One write path: the same change to a monitor or a status page, made through the form,
the API (a token) and a YAML file (`onwatch monitors import`), writes the same rows and
the same audit entry, recorded as done by whoever truly did it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import EscalationPolicy, Incident
from onwatch.cli import build_parser
from onwatch.core.audit import Actor
from onwatch.core.models import AuditEntry, Organization
from onwatch.core.roles import SCOPES
from onwatch.core.services import issue_token
from onwatch.uptime import cli as uptime_cli
from onwatch.uptime import services, state
from onwatch.uptime.models import Monitor, State, StatusPage
from tests.support.fixtures import make_member, make_org, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture(autouse=True)
def started(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands start Django on the configured database first; here it is started
    already, on the test database, which the command is to write to."""
    monkeypatch.setattr(uptime_cli, "prepare", lambda: None)


# The settings of the monitors the surfaces change, as a YAML file holds them.
DB = {"name": "db", "kind": "tcp", "config": {"host": "db.internal", "port": 5432}}
SHOP = {"name": "shop", "kind": "http", "config": {"url": "https://shop.example.com/"}}
API = {
    "name": "api",
    "kind": "http",
    "config": {"url": "https://api.example.com/health", "method": "HEAD"},
    "interval": 30,
    "timeout": 5,
    "policy": "on call",
    "parent": "db",
}
MODEL_DEFAULTS = {"interval": 60, "retry_interval": 20, "timeout": 10, "confirmations": 3}
LOCAL = "127.0.0.1"  # where the test client's requests come from


def ids(org: Organization) -> dict[str, int]:
    return dict(Monitor.objects.filter(org=org).values_list("name", "id"))


class Form:
    """The monitor pages, posted by a signed-in admin."""

    def __init__(self, org: Organization, user: Any) -> None:
        self.org, self.client = org, signed_in(user)
        self.actor = (user.email, LOCAL)

    def fields(self, spec: dict[str, Any]) -> dict[str, Any]:
        policy = EscalationPolicy.objects.filter(org=self.org, name=spec.get("policy", "-"))
        config = spec["config"]
        form = {
            **{name: str(spec.get(name, value)) for name, value in MODEL_DEFAULTS.items()},
            "name": spec["name"],
            "parent": ids(self.org).get(spec.get("parent", ""), ""),
            "policy": policy.first().pk if policy.exists() else "",  # type: ignore[union-attr]
            "config_follow_redirects": "on",
            "config_verify_tls": "on",
        }
        if spec["kind"] == "tcp":
            return form | {"config_host": config["host"], "config_port": config["port"]}
        return form | {"config_url": config["url"], "config_method": config.get("method", "GET")}

    def add(self, spec: dict[str, Any]) -> None:
        r = self.client.post(f"/monitors/add/{spec['kind']}/", self.fields(spec))
        assert r.status_code == 302, r.context["form"].errors

    def change(self, spec: dict[str, Any]) -> None:
        r = self.client.post(f"/monitors/{ids(self.org)[spec['name']]}/edit/", self.fields(spec))
        assert r.status_code == 302, r.context["form"].errors

    def pause(self, name: str) -> None:
        assert self.client.post(f"/monitors/{ids(self.org)[name]}/pause/").status_code == 302

    def resume(self, name: str) -> None:
        assert self.client.post(f"/monitors/{ids(self.org)[name]}/resume/").status_code == 302

    def remove(self, name: str) -> None:
        assert self.client.post(f"/monitors/{ids(self.org)[name]}/delete/").status_code == 302


class Rest:
    """The JSON API, with a token of an admin; `patch_enabled` pauses and resumes by
    changing `enabled` rather than through /pause/ and /resume/."""

    def __init__(self, org: Organization, user: Any, patch_enabled: bool = False) -> None:
        token = issue_token(user, org, "test", list(SCOPES), 30).raw
        self.client = Client(headers={"authorization": f"Bearer {token}"})
        self.org, self.patch_enabled = org, patch_enabled
        self.actor = (user.email, LOCAL)

    def body(self, spec: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in spec.items() if k not in ("policy", "parent")}
        policy = EscalationPolicy.objects.filter(org=self.org, name=spec.get("policy", "-"))
        body["policy_id"] = policy.first().pk if policy.exists() else None  # type: ignore[union-attr]
        body["parent_id"] = ids(self.org).get(spec.get("parent", ""))
        return body

    def call(self, method: str, path: str, body: Any = None) -> None:
        data = "" if body is None else json.dumps(body)
        r = self.client.generic(method, f"/api/v1/{path}", data, "application/json")
        assert r.status_code in (200, 201, 204), r.content

    def add(self, spec: dict[str, Any]) -> None:
        self.call("POST", "monitors/", self.body(spec))

    def change(self, spec: dict[str, Any]) -> None:
        self.call("PATCH", f"monitors/{ids(self.org)[spec['name']]}/", self.body(spec))

    def pause(self, name: str) -> None:
        self.switch(name, "pause", False)

    def resume(self, name: str) -> None:
        self.switch(name, "resume", True)

    def switch(self, name: str, action: str, enabled: bool) -> None:
        pk = ids(self.org)[name]
        if self.patch_enabled:
            self.call("PATCH", f"monitors/{pk}/", {"enabled": enabled})
        else:
            self.call("POST", f"monitors/{pk}/{action}/")

    def remove(self, name: str) -> None:
        self.call("DELETE", f"monitors/{ids(self.org)[name]}/")


class YamlFile:
    """A monitors file kept up to date by hand, applied with `onwatch monitors import`
    (the command itself, run in this process: its database is the test's)."""

    def __init__(self, org: Organization, path: Path) -> None:
        self.org, self.path = org, path
        self.actor = ("cli", "")
        self.monitors: dict[str, dict[str, Any]] = {"db": dict(DB), "shop": dict(SHOP)}

    def apply(self) -> None:
        self.path.write_text(yaml.safe_dump({"monitors": list(self.monitors.values())}))
        args = build_parser().parse_args(
            ["monitors", "import", str(self.path), "--org", self.org.name]
        )
        assert args.func(args) == 0

    def add(self, spec: dict[str, Any]) -> None:
        self.monitors[spec["name"]] = dict(spec)
        self.apply()

    def change(self, spec: dict[str, Any]) -> None:
        self.add(spec)

    def pause(self, name: str) -> None:
        self.monitors[name]["enabled"] = False
        self.apply()

    def resume(self, name: str) -> None:
        self.monitors[name].pop("enabled")
        self.apply()

    remove = None  # a file lists monitors; leaving one out does not remove it


def setting_up(name: str, due: datetime) -> Organization:
    """An organization as every surface starts from: shop is down, after two failures
    counted against its address, with its next check an hour away."""
    org = make_org(name)
    EscalationPolicy.objects.create(org=org, name="on call")
    Monitor.objects.create(org=org, **DB)
    shop = Monitor.objects.create(org=org, **SHOP, state=State.DOWN, failures=2, next_check_at=due)
    incidents.open_incident(org, state.source(shop), "shop is down", {})
    return org


def next_checks(org: Organization) -> dict[str, datetime]:
    return dict(Monitor.objects.filter(org=org).values_list("name", "next_check_at"))


def moved_to(m: Monitor, before: dict[str, datetime], span: tuple[datetime, datetime]) -> str:
    """Where the change moved the next check: not at all, to the moment of the change, or
    an interval after it (the moment is known to lie within `span`)."""
    if m.next_check_at == before.get(m.name):
        return "not moved"
    for wait in (0, m.interval):
        if (
            span[0] + timedelta(seconds=wait)
            <= m.next_check_at
            <= span[1] + timedelta(seconds=wait)
        ):
            return f"{wait} s after the change"
    return f"elsewhere: {m.next_check_at} ({span})"


def rows(
    org: Organization, before: dict[str, datetime], span: tuple[datetime, datetime]
) -> list[Any]:
    """The organization's monitors as stored, ids and times left out, but for where the
    change moved the next check."""
    found = []
    for m in Monitor.objects.filter(org=org).select_related("policy", "parent").order_by("name"):
        found.append(
            {
                **{f: getattr(m, f) for f in services.OWN},
                **{f: getattr(m, f) for f in ("state", "failures", "alarm_at", "claimed_by")},
                "policy": m.policy.name if m.policy else None,
                "parent": m.parent.name if m.parent else None,
                "next_check": moved_to(m, before, span),
                "changes": [(c.old, c.new) for c in m.changes.order_by("at", "id")],
            }
        )
    return found


def trail(org: Organization, after: int, actor: tuple[str, str]) -> list[dict[str, Any]]:
    """The audit entries since `after`, checked to name the actor truthfully, with the
    monitor's id as its name (ids differ between organizations)."""
    names = {pk: name for name, pk in ids(org).items()}
    found = []
    entries = AuditEntry.objects.filter(org=org, seq__gt=after, action__startswith="monitor-")
    for e in entries.order_by("seq"):
        assert (e.actor, e.ip) == actor, (e.action, e.actor, e.ip)
        data = dict(e.data)
        if "id" in data:
            data["id"] = names.get(data["id"], "(removed)")
        found.append({"action": e.action, "target": e.target, "data": data})
    return found


def notes(org: Organization) -> list[tuple[str, str, str]]:
    shop = Incident.objects.get(org=org)
    return [(str(shop.state), e.actor, e.text) for e in shop.events.filter(kind="note")]


SHOP_V2 = {**SHOP, "interval": 30, "config": {"url": "https://shop.example.com/v2"}}
STEPS: list[tuple[str, str, Any]] = [
    ("add a monitor with a policy and a parent", "add", API),
    ("check more often", "change", {**SHOP, "interval": 30}),
    ("check another address", "change", SHOP_V2),
    ("pause", "pause", "shop"),
    ("resume", "resume", "shop"),
    ("remove", "remove", "api"),
]


def make_surface(name: str, tmp_path: Path, due: datetime) -> Any:
    org = setting_up(name, due)
    admin = make_member(org, "admin")
    if name == "form":
        return Form(org, admin)
    if name == "yaml":
        return YamlFile(org, tmp_path / f"{name}.yaml")
    return Rest(org, admin, patch_enabled=name == "api-patch")


def test_form_api_and_yaml_write_the_same_rows_and_audit_entries(tmp_path: Path) -> None:
    due = timezone.now() + timedelta(hours=1)
    surfaces = {
        name: make_surface(name, tmp_path, due) for name in ("form", "api", "api-patch", "yaml")
    }
    for what, step, arg in STEPS:
        found = {}
        for name, surface in surfaces.items():
            if getattr(surface, step) is None:
                continue
            started, before = timezone.now(), next_checks(surface.org)
            after = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first()
            getattr(surface, step)(arg)
            org, span = surface.org, (started, timezone.now())
            found[name] = (rows(org, before, span), trail(org, after or 0, surface.actor))
        expected = found.pop("form")
        for name, got in found.items():
            assert got == expected, f"{what}: {name} differs from the form: {got} != {expected}"
    # A paused monitor cannot recover: its incident is resolved, in the name of whoever
    # paused it.
    for surface in surfaces.values():
        assert notes(surface.org) == [("resolved", surface.actor[0], "shop was paused.")]


# What the comparison above holds the form and the API to, spelled out.


def test_the_form_brings_the_next_check_closer_when_the_interval_gets_shorter() -> None:
    org = setting_up("Acme", timezone.now() + timedelta(hours=1))
    Form(org, make_member(org, "admin")).change({**SHOP, "interval": 30})
    shop = Monitor.objects.get(org=org, name="shop")
    assert shop.next_check_at <= timezone.now() + timedelta(seconds=30)
    assert shop.failures == 2  # the same address: its failures still count


def test_the_form_checks_a_new_address_at_once_and_forgets_the_old_ones_failures() -> None:
    org = setting_up("Acme", timezone.now() + timedelta(hours=1))
    Form(org, make_member(org, "admin")).change(SHOP_V2)
    shop = Monitor.objects.get(org=org, name="shop")
    assert shop.failures == 0 and shop.next_check_at <= timezone.now()


def test_pausing_through_the_api_is_recorded_as_done_by_the_tokens_owner() -> None:
    org = setting_up("Acme", timezone.now())
    admin = make_member(org, "admin")
    Rest(org, admin, patch_enabled=True).pause("shop")
    paused = AuditEntry.objects.filter(org=org).order_by("-seq").first()
    assert paused is not None and paused.action == "monitor-paused"
    assert (paused.actor, paused.ip, paused.target) == (admin.email, LOCAL, "shop")
    # A paused monitor cannot recover: its incident is resolved in the name of who paused it.
    assert notes(org) == [("resolved", admin.email, "shop was paused.")]


def test_a_yaml_import_names_its_actor_on_every_entry(tmp_path: Path) -> None:
    org = setting_up("Acme", timezone.now())
    YamlFile(org, tmp_path / "m.yaml").add(API)
    entries = AuditEntry.objects.filter(org=org, action__startswith="monitor").order_by("seq")
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("monitor-added", "api", "cli"),
        ("monitors-imported", "", "cli"),
    ]


# --- status pages ---------------------------------------------------------------------------


def page_rows(org: Organization) -> list[dict[str, Any]]:
    return [
        {
            "title": p.title,
            "intro": p.intro,
            "show_incidents": p.show_incidents,
            "items": [(i.monitor.name, i.label, i.position) for i in p.items.all()],
        }
        for p in StatusPage.objects.filter(org=org).order_by("title")
    ]


def page_form(org: Organization, title: str, shown: list[tuple[str, str]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": title,
        "slug": f"{org.name}-status",
        "intro": "Write to help@example.com",
        "show_incidents": "on",
        "items-TOTAL_FORMS": str(len(shown)),
        "items-INITIAL_FORMS": "0",
        "items-MIN_NUM_FORMS": "0",
        "items-MAX_NUM_FORMS": "1000",
    }
    for n, (monitor, label) in enumerate(shown):
        data |= {f"items-{n}-monitor": ids(org)[monitor], f"items-{n}-label": label}
    return data


def page_input(org: Organization, title: str, shown: list[tuple[str, str]]) -> Any:
    items = tuple((ids(org)[monitor], label) for monitor, label in shown)
    return services.StatusPageInput(
        title, f"{org.name}-status", "Write to help@example.com", True, items
    )


def test_a_status_page_is_written_the_same_from_the_form_and_the_services(
    tmp_path: Path,
) -> None:
    """Status pages have only a form today; the API and YAML to come call the same
    functions, which must write what the form writes."""
    due = timezone.now()
    by_form, direct = setting_up("ui", due), setting_up("direct", due)
    admin = make_member(by_form, "admin")
    client, actor = signed_in(admin), Actor("cli")
    shown = [("shop", "Shop"), ("db", "Database")]

    assert client.post("/status-pages/add/", page_form(by_form, "Status", shown)).status_code == 302
    services.add_status_page(direct, page_input(direct, "Status", shown), actor)
    pk = StatusPage.objects.get(org=by_form).pk
    changed = [("db", "Database")]
    r = client.post(f"/status-pages/{pk}/", page_form(by_form, "Our status", changed))
    assert r.status_code == 302
    page = StatusPage.objects.get(org=direct)
    services.change_status_page(page, page_input(direct, "Our status", changed), actor)
    assert page_rows(by_form) == page_rows(direct) != []
    client.post(f"/status-pages/{pk}/delete/")
    services.remove_status_page(page, actor)
    assert page_rows(by_form) == page_rows(direct) == []

    def entries(org: Organization, who: str) -> list[tuple[str, str, dict[str, Any]]]:
        found = AuditEntry.objects.filter(org=org, action__startswith="status-page")
        found = found.order_by("seq")
        assert {e.actor for e in found} == {who}
        return [(e.action, e.target, {**e.data, "slug": "-"}) for e in found]

    assert entries(by_form, admin.email) == entries(direct, "cli")
    assert [a for a, _, _ in entries(direct, "cli")] == [
        "status-page-added",
        "status-page-changed",
        "status-page-removed",
    ]
