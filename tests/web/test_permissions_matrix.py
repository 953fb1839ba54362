"""Least privilege, proved: every URL pattern × every role against the permission table.

Walks every pattern of onwatch.urls, through every include (allauth's and the admin's too),
so a new view cannot slip in without a declared permission, and a declared permission
cannot differ from what the view actually enforces.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils import timezone

from onwatch.alerts import services
from onwatch.alerts.models import EscalationPolicy, Incident, Maintenance
from onwatch.backups import services as backup_services
from onwatch.core import roles
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Invite, Job, Membership, Organization
from onwatch.core.roles import PERMISSIONS, SCOPES, Role, has_permission
from onwatch.core.services import issue_token
from onwatch.deploys.models import Host
from onwatch.uptime.models import Monitor
from tests.support.fixtures import signed_in

# Its subject is the permission table, not the database: one of the two passes runs it.
pytestmark = [pytest.mark.django_db, pytest.mark.once, pytest.mark.usefixtures("fast_passwords")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"
ROLES = [r.value for r in Role]

# allauth's own pages that anyone may open: signing in and the steps around it. Every other
# allauth page must send an anonymous visitor to sign in.
ALLAUTH_OPEN_PAGES = {
    "account_login",
    "account_signup",
    "account_inactive",
    "account_email_verification_sent",
    "account_confirm_email",
    "account_reset_password",
    "account_reset_password_done",
    "account_reset_password_from_key",
    "account_reset_password_from_key_done",
}
# Arguments for third-party patterns: any value reaches their sign-in check first.
THIRD_PARTY_ARGS = {
    "app_label": "auth",
    "object_id": "1",
    "content_type_id": "1",
    "id": "1",
    "pk": "1",
    "url": "no-such-page/",
    "uidb36": "1",
    "key": "not-a-real-key",
}


@dataclass
class Route:
    pattern: str
    name: str | None  # with its namespace, ready for reverse()
    callback: Callable[..., HttpResponse]
    source: str  # "onwatch", "allauth" or "admin": which include it came from
    params: list[str]

    @property
    def module(self) -> str:
        return self.callback.__module__

    @property
    def ours(self) -> bool:
        return self.module.startswith("onwatch.")

    @property
    def permission(self) -> str | None:
        return getattr(self.callback, "onwatch_permission", None)

    @property
    def scope(self) -> str | None:
        return getattr(self.callback, "onwatch_scope", None)

    @property
    def public(self) -> str | None:
        return getattr(self.callback, "onwatch_public", None)

    @property
    def operations(self) -> dict[str, str] | None:
        """The typed API's views (onwatch/api.py) answer several methods, each behind its
        own scope: method -> scope."""
        found: dict[str, str] | None = getattr(self.callback, "onwatch_operations", None)
        return found


def _source(resolver: URLResolver, parent: str) -> str:
    if resolver.app_name == "admin":
        return "admin"
    if getattr(resolver.urlconf_module, "__name__", "").startswith("allauth"):
        return "allauth"
    return parent


def walk(
    patterns: list[Any],
    prefix: str = "",
    ns: str = "",
    source: str = "onwatch",
    params: tuple[str, ...] = (),
) -> Iterator[Route]:
    for p in patterns:
        # An include's own pattern may capture arguments too (allauth's keys/<int:pk>/).
        mine = params + tuple(p.pattern.regex.groupindex)
        if isinstance(p, URLResolver):
            inner_ns = f"{ns}:{p.namespace}".strip(":") if p.namespace else ns
            yield from walk(
                p.url_patterns, prefix + str(p.pattern), inner_ns, _source(p, source), mine
            )
        elif isinstance(p, URLPattern):
            name = f"{ns}:{p.name}".strip(":") if p.name else None
            yield Route(prefix + str(p.pattern), name, p.callback, source, list(mine))


ROUTES = list(walk(get_resolver().url_patterns))


@dataclass
class World:
    """One organization with a member of each role and one real object of each kind."""

    org: Organization
    members: dict[str, Any]
    objects: dict[str, Any]


# How to build each onwatch URL's arguments from real objects of the organization. A new
# view with arguments fails the matrix until it is listed here.
ARGS: dict[str, Callable[[World], dict[str, Any]]] = {
    "invite": lambda w: {"token": w.objects["invite_raw"]},
    "channel_edit": lambda w: {"pk": w.objects["channel"].pk},
    "channel_delete": lambda w: {"pk": w.objects["channel"].pk},
    "channel_test": lambda w: {"pk": w.objects["channel"].pk},
    "incident_detail": lambda w: {"pk": w.objects["incident"].pk},
    "incident_ack": lambda w: {"pk": w.objects["incident"].pk},
    "incident_note": lambda w: {"pk": w.objects["incident"].pk},
    "incident_resolve": lambda w: {"pk": w.objects["incident"].pk},
    "policy_edit": lambda w: {"pk": w.objects["policy"].pk},
    "policy_delete": lambda w: {"pk": w.objects["policy"].pk},
    "maintenance_edit": lambda w: {"pk": w.objects["maintenance"].pk},
    "maintenance_delete": lambda w: {"pk": w.objects["maintenance"].pk},
    "member_role": lambda w: {"pk": w.objects["membership"].pk},
    "member_remove": lambda w: {"pk": w.objects["membership"].pk},
    "token_revoke": lambda w: {"pk": w.objects["token"].pk},
    "job_detail": lambda w: {"pk": w.objects["job"].pk},
    "job_log": lambda w: {"pk": w.objects["job"].pk},
    "job_events": lambda w: {"pk": w.objects["job"].pk},
    "job_cancel": lambda w: {"pk": w.objects["job"].pk},
    "backup_plan": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_plan_edit": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_plan_delete": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_plan_run": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_plan_drill": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_restore_start": lambda w: {"pk": w.objects["backup_plan"].pk},
    "backup_restore": lambda w: {"pk": backup_restore(w).pk},
    "backup_repository": lambda w: {"pk": backup_repository(w).pk},
    "backup_repository_edit": lambda w: {"pk": backup_repository(w).pk},
    "backup_repository_delete": lambda w: {"pk": backup_repository(w).pk},
    "backup_repository_connect": lambda w: {"pk": backup_repository(w).pk},
    "backup_repository_forget_host_key": lambda w: {"pk": backup_repository(w).pk},
    "backup_repository_kit": lambda w: {"pk": backup_repository(w).pk},
    "backup_source_add_kind": lambda w: {"kind": "directory"},
    "backup_source_edit": lambda w: {"pk": w.objects["backup_plan"].source.pk},
    "backup_source_delete": lambda w: {"pk": w.objects["backup_plan"].source.pk},
    "api_job": lambda w: {"pk": w.objects["job"].pk},
    "api_job_cancel": lambda w: {"pk": w.objects["job"].pk},
    "api_ssh_key_remove": lambda w: {"pk": 1},
    "ping": lambda w: {"code": str(uuid.uuid4())},
    "ping-slug": lambda w: {"key": "somekey", "slug": "nightly-backup"},
    "api:monitor_get": lambda w: {"monitor_id": monitor(w).pk},
    "api:monitor_pause": lambda w: {"monitor_id": monitor(w).pk},
    "api:monitor_resume": lambda w: {"monitor_id": monitor(w).pk},
    "api:policy_get": lambda w: {"policy_id": w.objects["policy"].pk},
    "api:incident_get": lambda w: {"incident_id": w.objects["incident"].pk},
    "api:incident_acknowledge": lambda w: {"incident_id": w.objects["incident"].pk},
    "api:incident_note": lambda w: {"incident_id": w.objects["incident"].pk},
    "api:maintenance_get": lambda w: {"window_id": w.objects["maintenance"].pk},
    "status_page": lambda w: {"slug": status_item(w).page.slug},
    "status_badge": lambda w: {"slug": status_item(w).page.slug, "item": status_item(w).pk},
    "status_badge_uptime": lambda w: {
        "slug": status_item(w).page.slug,
        "item": status_item(w).pk,
    },
    "status_page_edit": lambda w: {"pk": status_item(w).page.pk},
    "status_page_delete": lambda w: {"pk": status_item(w).page.pk},
    "monitor_add_kind": lambda w: {"kind": "http"},
    "monitor_detail": lambda w: {"pk": monitor(w).pk},
    "monitor_edit": lambda w: {"pk": monitor(w).pk},
    "monitor_pause": lambda w: {"pk": monitor(w).pk},
    "monitor_resume": lambda w: {"pk": monitor(w).pk},
    "monitor_delete": lambda w: {"pk": monitor(w).pk},
    "service_detail": lambda w: {"pk": service(w).pk},
    "service_edit": lambda w: {"pk": service(w).pk},
    "service_secret": lambda w: {"pk": service(w).pk},
    "service_secret_remove": lambda w: {"pk": service(w).pk},
    "service_run": lambda w: {"pk": service(w).pk},
    "service_delete": lambda w: {"pk": service(w).pk},
    "service_forget_host_key": lambda w: {"pk": service(w).pk},
    "service_webhook_secret": lambda w: {"pk": service(w).pk},
    "deploy_hook": lambda w: {"pk": service(w).pk},
    "pipeline_detail": lambda w: {"pk": pipeline(w).pk},
    "service_domain": lambda w: {"pk": service(w).pk},
    "service_watch": lambda w: {"pk": service(w).pk},
    "service_hosts": lambda w: {"pk": service(w).pk},
    "service_deploy": lambda w: {"pk": service(w).pk},
    "service_rollback": lambda w: {"pk": service(w).pk},
    "deploy_detail": lambda w: {"pk": deploy(w).pk},
    "release_no_rollback": lambda w: {"pk": release(w).pk},
    "api:service_get": lambda w: {"service_id": service(w).pk},
    "api:service_run": lambda w: {"service_id": service(w).pk},
    "api:service_secret_set": lambda w: {"service_id": service(w).pk},
    "api:pipeline_get": lambda w: {"pipeline_id": pipeline(w).pk},
    "host_detail": lambda w: {"pk": host(w).pk},
    "host_edit": lambda w: {"pk": host(w).pk},
    "host_check": lambda w: {"pk": host(w).pk},
    "host_forget_key": lambda w: {"pk": host(w).pk},
    "host_remove": lambda w: {"pk": host(w).pk},
    "api:host_get": lambda w: {"host_id": host(w).pk},
    "api:host_check": lambda w: {"host_id": host(w).pk},
    "errors_project": lambda w: {"pk": error_project(w).pk},
    "errors_rotate_key": lambda w: {"pk": error_project(w).pk},
    "errors_settings": lambda w: {"pk": error_project(w).pk},
    "errors_revoke_key": lambda w: {"pk": error_project(w).pk},
    "errors_issue": lambda w: {"pk": error_issue(w).pk},
    "errors_alerts": lambda w: {"pk": error_project(w).pk},
    "errors_issues_bulk": lambda w: {"pk": error_project(w).pk},
    "errors_issue_state": lambda w: {"pk": error_issue(w).pk},
    "errors_issue_split": lambda w: {"pk": error_issue(w).pk},
    "api:errors_issue_state": lambda w: {"issue_id": error_issue(w).pk},
    "api:errors_issue_split": lambda w: {"issue_id": error_issue(w).pk},
    "errors_envelope": lambda w: {"project_id": error_project(w).pk},
    "errors_store": lambda w: {"project_id": error_project(w).pk},
    "api:service_domain_set": lambda w: {"service_id": service(w).pk},
    "api:service_backup_plan_set": lambda w: {"service_id": service(w).pk},
    "api:service_watch_set": lambda w: {"service_id": service(w).pk},
    "api:service_hosts": lambda w: {"service_id": service(w).pk},
    "api:service_hosts_set": lambda w: {"service_id": service(w).pk},
    "api:service_deploy": lambda w: {"service_id": service(w).pk},
    "api:service_rollback": lambda w: {"service_id": service(w).pk},
    "api:service_releases": lambda w: {"service_id": service(w).pk},
    "api:deploy_get": lambda w: {"deploy_id": deploy(w).pk},
    "api:release_no_rollback": lambda w: {"release_id": release(w).pk},
}


def host(w: World) -> Any:
    """An SSH host of the organization (never reached: no route here connects on GET, and a
    check is only queued), made on first use by the host routes."""
    if "host" not in w.objects:
        from onwatch.deploys.models import Host

        w.objects["host"] = Host.objects.create(
            org=w.org, name="deploy@192.0.2.1", user="deploy", address="192.0.2.1"
        )
    return w.objects["host"]


def error_project(w: World) -> Any:
    """An error-tracking project of the organization, made on first use."""
    if "error_project" not in w.objects:
        from onwatch.errors import services as error_services

        w.objects["error_project"] = error_services.add_project(w.org, "matrix", SYSTEM)
    return w.objects["error_project"]


def error_issue(w: World) -> Any:
    """An issue of the world's error project, with one event, made on first use."""
    if "error_issue" not in w.objects:
        from onwatch.errors import intake
        from onwatch.errors import services as error_services
        from onwatch.errors.models import Issue

        project = error_project(w)
        event = {"event_id": "c" * 32, "message": "matrix"}
        error_services.take(
            intake.Incoming(project.pk, project.public_key, "127.0.0.1", [event]),
            timezone.now(),
        )
        w.objects["error_issue"] = Issue.objects.get(project=project)
    return w.objects["error_issue"]


def service(w: World) -> Any:
    """A service of the organization (never fetched: no route here runs git on GET), made
    on first use by the service routes."""
    if "service" not in w.objects:
        from onwatch.deploys import services as deploy_services

        w.objects["service"] = deploy_services.add_service(
            w.org,
            deploy_services.ServiceFields(name="matrix", git_url="/nonexistent/matrix.git"),
            SYSTEM,
            {"MATRIX_TOKEN": "matrix-secret-value"},
        )
    return w.objects["service"]


def pipeline(w: World) -> Any:
    """A queued pipeline of the world's service, made on first use."""
    if "pipeline" not in w.objects:
        from onwatch.deploys import services as deploy_services

        w.objects["pipeline"] = deploy_services.run_pipeline(service(w), SYSTEM, "ui")
    return w.objects["pipeline"]


def deploy(w: World) -> Any:
    """A queued deploy of the world's service (given a domain), made on first use."""
    if "deploy" not in w.objects:
        from onwatch.deploys import services as deploy_services

        deploy_services.set_domain(service(w), "matrix.test", False, SYSTEM)
        w.objects["deploy"] = deploy_services.queue_deploy(service(w), SYSTEM, "ui")
    return w.objects["deploy"]


def release(w: World) -> Any:
    """A release row of the world's deploy (never built: no route here builds on GET)."""
    if "release" not in w.objects:
        from onwatch.deploys import services as deploy_services

        w.objects["release"] = deploy_services.new_release(deploy(w), "")
    return w.objects["release"]


def monitor(w: World) -> Any:
    """An HTTP monitor of the organization, made on first use by the monitor routes."""
    if "monitor" not in w.objects:
        from onwatch.uptime.models import Monitor

        w.objects["monitor"] = Monitor.objects.create(
            org=w.org, name="site", kind="http", config={"url": "http://127.0.0.1:9/"}
        )
    return w.objects["monitor"]


def backup_repository(w: World) -> Any:
    """A repository of the organization (never initialised: no route here runs restic
    against it on GET), made on first use by the repository routes."""
    if "backup_repository" not in w.objects:
        from onwatch.backups.models import Repository

        w.objects["backup_repository"] = Repository.objects.create(
            org=w.org,
            name="matrix",
            url="/nonexistent/matrix-repository",
            shown_url="/nonexistent/matrix-repository",
            password="matrix-password",
            provider="matrix",
        )
    return w.objects["backup_repository"]


def backup_restore(w: World) -> Any:
    """A restore of the world's plan, made on first use by the restore page's route."""
    if "backup_restore" not in w.objects:
        from onwatch.backups.models import Restore

        w.objects["backup_restore"] = Restore.objects.create(
            plan=w.objects["backup_plan"], target="/nonexistent/restored"
        )
    return w.objects["backup_restore"]


def status_item(w: World) -> Any:
    """A status page showing one monitor, made on first use by the status page routes."""
    if "status_item" not in w.objects:
        from onwatch.uptime.models import Monitor, StatusPage, StatusPageItem

        monitor = Monitor.objects.create(org=w.org, name="matrix", kind="http")
        page = StatusPage.objects.create(org=w.org, slug="matrix", title="Matrix")
        w.objects["status_item"] = StatusPageItem.objects.create(
            page=page, monitor=monitor, label="Shop"
        )
    return w.objects["status_item"]


# API operations that remove what they are given get an object of their own, so the
# operations checked after them still find theirs.
SPARE_FOR_DELETE: dict[str, Callable[[World], dict[str, Any]]] = {
    "api:host_get": lambda w: {
        "host_id": Host.objects.create(org=w.org, name=f"spare-{uuid.uuid4()}", address="h").pk
    },
    "api:monitor_get": lambda w: {
        "monitor_id": Monitor.objects.create(org=w.org, name="spare", kind="tcp").pk
    },
    "api:policy_get": lambda w: {
        "policy_id": EscalationPolicy.objects.create(org=w.org, name="spare").pk
    },
    "api:maintenance_get": lambda w: {
        "window_id": Maintenance.objects.create(
            org=w.org, name="spare", starts_at=timezone.now(), ends_at=timezone.now()
        ).pk
    },
}


@pytest.fixture
def world(org: Organization, members: dict[str, Any]) -> World:
    _, invite_raw = Invite.issue(Role.VIEWER, org)
    objects = {
        "invite_raw": invite_raw,
        "channel": services.add_channel(org, "ops", "json://127.0.0.1:9/hook"),
        "incident": Incident.objects.create(org=org, source="matrix", title="down"),
        "policy": EscalationPolicy.objects.create(org=org, name="default"),
        "maintenance": Maintenance.objects.create(
            org=org, name="window", starts_at=timezone.now(), ends_at=timezone.now()
        ),
        "membership": Membership.objects.get(user=members["viewer"]),
        "token": issue_token(members["owner"], org, "matrix", ["jobs:read"], 1).token,
        "job": Job.objects.create(org=org, kind="core.noop"),
        "backup_plan": backup_services.add_plan(
            backup_services.add_source(org, "files", "directory", path="/srv/files"),
            "nightly",
            [],
        ),
    }
    return World(org, members, objects)


def url_of(route: Route, w: World, method: str = "GET") -> str:
    if route.ours and method == "DELETE" and route.name in SPARE_FOR_DELETE:
        kwargs: dict[str, Any] = SPARE_FOR_DELETE[route.name](w)
    elif route.ours:
        if not route.params:
            kwargs = {}
        else:
            build = ARGS.get(route.name or "")
            assert build, (
                f"{route.pattern} takes {route.params}: add how to build them from real "
                "objects to ARGS in tests/web/test_permissions_matrix.py"
            )
            kwargs = build(w)
    else:
        missing = [p for p in route.params if p not in THIRD_PARTY_ARGS]
        assert not missing, f"{route.pattern}: add sample values for {missing}"
        kwargs = {p: THIRD_PARTY_ARGS[p] for p in route.params}
    if route.name:
        url = reverse(route.name, kwargs=kwargs)
    else:
        url = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: kwargs[m.group(1)], route.pattern)
        url = url.replace("^", "").replace("$", "")
    # The URL built must reach this very view, or the test would be checking another one.
    assert resolve(urlsplit(url).path).func == route.callback, f"{url} is not {route.pattern}"
    return url


def login_path() -> str:
    return reverse("account_login")


def sends_to_sign_in(r: Any) -> bool:
    return bool(r.status_code == 302 and urlsplit(r["Location"]).path == login_path())


def test_every_view_declares_exactly_one_permission_or_is_public() -> None:
    problems = []
    for route in ROUTES:
        if not route.ours:
            if route.source not in ("allauth", "admin"):
                problems.append(f"{route.pattern}: {route.module} is neither onwatch's nor allowed")
            continue
        marks = [m for m in (route.permission, route.public, route.operations) if m]
        if len(marks) != 1:
            problems.append(f"{route.pattern}: {route.module} needs require(...) or public(...)")
        elif route.operations:
            unknown = [s for s in route.operations.values() if s not in SCOPES]
            if unknown:
                problems.append(f"{route.pattern}: unknown scopes {unknown}")
        elif route.permission and route.permission not in PERMISSIONS:
            problems.append(f"{route.pattern}: unknown permission {route.permission}")
        elif route.scope and SCOPES.get(route.scope) != route.permission:
            problems.append(f"{route.pattern}: scope {route.scope} is not {route.permission}")
    assert not problems, "\n".join(problems)
    assert any(r.source == "allauth" for r in ROUTES) and any(r.source == "admin" for r in ROUTES)
    assert sum(1 for r in ROUTES if r.permission) >= 20
    assert sum(len(r.operations or {}) for r in ROUTES) >= 20


def test_third_party_views_send_anonymous_visitors_to_sign_in(world: World) -> None:
    problems = []
    for route in ROUTES:
        if route.ours:
            continue
        url = url_of(route, world)
        r = Client().get(url, follow=True)
        landed = r.request["PATH_INFO"]
        if route.source == "allauth" and route.name in ALLAUTH_OPEN_PAGES:
            if r.status_code != 200 or r.redirect_chain:
                problems.append(f"{url}: allauth's own page answered {r.status_code}")
        elif landed != login_path() or not r.redirect_chain:
            problems.append(f"{url}: anonymous ended at {landed} ({r.status_code}), not sign-in")
    assert not problems, "\n".join(problems)


def check(route: Route, url: str, role: str | None, w: World) -> str | None:
    """What is wrong with how `route` answers `role` (None: anonymous), or None."""
    scope = route.scope
    api = scope is not None
    if role is None:
        r = Client().get(url)
        if api:
            return None if r.status_code == 401 else f"anonymous got {r.status_code}, not 401"
        return None if sends_to_sign_in(r) else f"anonymous got {r.status_code}, not sign-in"
    user = w.members[role]
    if scope is not None:
        raw = issue_token(user, w.org, "matrix", [scope], 1).raw
        r = Client().get(url, headers={"authorization": f"Bearer {raw}"})
    else:
        r = signed_in(user).get(url)
    assert route.permission
    if not has_permission(role, route.permission):
        return None if r.status_code == 403 else f"{role} got {r.status_code}, not 403"
    # Real objects of the organization, so a holder must get past the permission and the
    # lookup: 405 is fine (POST-only), 403 or 404 or a trip to sign-in is not.
    if r.status_code in (401, 403, 404) or r.status_code >= 500 or sends_to_sign_in(r):
        return f"{role} holds {route.permission} but got {r.status_code}"
    return None


@pytest.mark.parametrize("role", [None, *ROLES], ids=["anonymous", *ROLES])
def test_every_onwatch_view_answers_each_role_as_the_table_says(
    world: World, role: str | None
) -> None:
    problems = []
    checked = 0
    for route in ROUTES:
        if not route.ours or not route.permission:
            continue
        problem = check(route, url_of(route, world), role, world)
        checked += 1
        if problem:
            problems.append(f"{route.pattern} ({route.permission}): {problem}")
    assert not problems, "\n".join(problems)
    assert checked >= 20


def check_operation(
    route: Route, method: str, scope: str, role: str | None, w: World
) -> str | None:
    """What is wrong with how one method of a typed API view answers `role`, or None.

    Beyond the table: a holder's token lacking just this scope must be refused, so the
    operation is known to check its own scope and not whatever the token happens to hold.
    """
    url = url_of(route, w, method)

    def call(scopes: list[str] | None) -> Any:
        headers = {}
        if scopes is not None:
            assert role is not None
            raw = issue_token(w.members[role], w.org, "matrix", scopes, 1).raw
            headers = {"authorization": f"Bearer {raw}"}
        body = "{}" if method in ("POST", "PUT", "PATCH") else ""
        return Client().generic(
            method, url, data=body, content_type="application/json", headers=headers
        )

    if role is None:
        r = call(None)
        return None if r.status_code == 401 else f"anonymous got {r.status_code}, not 401"
    permission = SCOPES[scope]
    if not has_permission(role, permission):
        r = call([scope])
        return None if r.status_code == 403 else f"{role} got {r.status_code}, not 403"
    others = call([s for s in SCOPES if s != scope])
    if others.status_code != 403:
        return f"{role}'s token without {scope} got {others.status_code}, not 403"
    r = call([scope])
    # Real objects of the organization: a holder gets past the scope and the lookup; an
    # empty body may be refused (422), a 401, 403, 404 or 5xx may not.
    if r.status_code in (401, 403, 404) or r.status_code >= 500:
        return f"{role} holds {permission} but got {r.status_code}"
    return None


@pytest.mark.parametrize("role", [None, *ROLES], ids=["anonymous", *ROLES])
def test_every_api_operation_answers_each_role_as_the_table_says(
    world: World, role: str | None
) -> None:
    problems = []
    checked = 0
    for route in ROUTES:
        for method, scope in (route.operations or {}).items():
            problem = check_operation(route, method, scope, role, world)
            checked += 1
            if problem:
                problems.append(f"{method} {route.pattern} ({scope}): {problem}")
    assert not problems, "\n".join(problems)
    assert checked >= 20


def test_public_views_answer_anonymous_visitors(world: World) -> None:
    problems = []
    for route in ROUTES:
        if route.ours and route.public:
            url = url_of(route, world)
            r = Client().get(url)
            if r.status_code >= 500 or r.status_code in (401, 403):
                problems.append(f"{url}: public but answered {r.status_code}")
    assert not problems, "\n".join(problems)


def test_pages_carry_no_inline_script_or_style(world: World) -> None:
    """The Content-Security-Policy blocks inline scripts and style attributes: a page
    that uses them is broken in the browser, so none may."""
    client = signed_in(world.members["owner"])
    problems = []
    for route in ROUTES:
        if not (route.ours and route.permission) or route.scope:
            continue
        r = client.get(url_of(route, world))
        if r.status_code != 200 or "text/html" not in r["Content-Type"]:
            continue
        body = r.content.decode()
        if 'style="' in body:
            problems.append(f"{route.pattern}: style attribute")
        if re.search(r"<script(?![^>]*\bsrc=)", body):
            problems.append(f"{route.pattern}: inline <script>")
    assert not problems, "\n".join(problems)


def test_the_documented_permission_table_is_current() -> None:
    text = DOC.read_text()
    found = re.search(
        r"<!-- permission-table:start -->\n(.*?)<!-- permission-table:end -->", text, re.S
    )
    assert found, f"{DOC} lost its permission-table markers"
    assert found.group(1) == roles.markdown_table(), (
        "docs/permissions.md is out of date: replace the table between its markers with "
        "the output of `python -m onwatch.core.roles`"
    )


def test_the_generated_table_follows_the_roles() -> None:
    rows = {name: held for name, _, held in roles.permission_table()}
    assert set(rows) == set(PERMISSIONS)
    # Columns are owner, admin, deployer, viewer: whoever holds a permission, every role
    # above holds it too, and the owner holds everything.
    for held in rows.values():
        assert held[0] and held == sorted(held, reverse=True)
    assert rows["audit.view"] == [True, True, False, False]
    assert rows["org.manage"] == [True, False, False, False]
