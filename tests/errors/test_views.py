"""The project and issue pages: the DSN, what was refused and dropped, sessions, the stack."""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import suppress
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Organization
from onwatch.errors import intake, services
from onwatch.errors.models import Event, Issue, Project
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def send(project: Project, *events: dict[str, Any], refused: str = "", **counted: int) -> None:
    with_ids = [{"event_id": uuid.uuid4().hex, **e} for e in events]  # as intake gives them
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", with_ids)
    incoming.refused = refused
    incoming.tallies = Counter({tuple(k.split(":")): v for k, v in counted.items()})  # type: ignore[misc]
    with suppress(services.Refused):
        services.take(incoming, timezone.now())


def test_a_project_is_added_from_its_page_and_shows_its_dsn(
    org: Organization, members: dict[str, Any]
) -> None:
    client = signed_in(members["admin"])
    added = client.post("/errors/add/", {"name": "shop"})
    project = Project.objects.get()
    assert added.status_code == 302 and added["Location"] == f"/errors/{project.pk}/"
    page = client.get(f"/errors/{project.pk}/").content.decode()
    assert f"http://{project.public_key}@localhost:8000/{project.pk}" in page
    assert AuditEntry.objects.filter(action="errors-project-added", target="shop").exists()


def test_a_new_dsn_stops_the_old_one(org: Organization, members: dict[str, Any]) -> None:
    project = services.add_project(org, "shop", SYSTEM)
    old = project.public_key
    signed_in(members["admin"]).post(f"/errors/{project.pk}/rotate-key/")
    project.refresh_from_db()
    assert project.public_key != old
    with pytest.raises(services.Refused) as refused:
        services.take(
            intake.Incoming(project.pk, old, "", [{"event_id": "a" * 32}]), timezone.now()
        )
    assert refused.value.status == 403


def test_the_project_page_shows_refusals_drops_and_crash_free_sessions(
    org: Organization, members: dict[str, Any]
) -> None:
    project = services.add_project(org, "shop", SYSTEM)
    for _ in range(3):
        send(project, {"message": "x"}, refused="rate_limited")
    send(
        project,
        refused="",
        **{"sdk-dropped:queue_overflow (error)": 7, "sessions:shop@2": 4, "crashed:shop@2": 1},
    )
    page = signed_in(members["viewer"]).get(f"/errors/{project.pk}/").content.decode()
    since = timezone.localtime(services.hour_of(timezone.now()) - timedelta(hours=1))
    assert f"3 events refused since {since:%H:%M}: sent faster than the rate limit" in page
    assert "7: queue_overflow (error)" in page
    assert "<td>shop@2</td><td>4</td><td>1</td><td>75.0 %</td>" in page


def test_the_issue_page_shows_the_app_frames_first_and_the_user(
    org: Organization, members: dict[str, Any]
) -> None:
    project = services.add_project(org, "shop", SYSTEM)
    frames = [
        {"module": "shop.pay", "function": "charge", "in_app": True, "lineno": 3},
        {"module": "stripe.api", "function": "post", "in_app": False, "lineno": 9},
    ]
    event = {
        "exception": {
            "values": [{"type": "KeyError", "value": "'card'", "stacktrace": {"frames": frames}}]
        },
        "user": {"id": "u-1", "email": "ada@example.com"},
        "breadcrumbs": {"values": [{"category": "http", "message": "GET /cart"}]},
        "tags": {"region": "eu"},
    }
    send(project, event, {**event, "user": {"id": "u-2"}}, {**event, "user": {"id": "u-1"}})
    issue = Issue.objects.get()
    assert (issue.event_count, issue.users_affected) == (3, 2)
    page = signed_in(members["viewer"]).get(f"/errors/issues/{issue.pk}/").content.decode()
    assert page.index("shop.pay") < page.index("stripe.api")
    assert "GET /cart" in page and "region" in page
    listing = signed_in(members["viewer"]).get(f"/errors/{project.pk}/").content.decode()
    assert "<td>3</td><td>2</td>" in listing


def test_projects_are_listed_and_added_through_the_api(
    org: Organization, members: dict[str, Any]
) -> None:
    from onwatch.core.services import issue_token

    raw = issue_token(members["admin"], org, "ci", ["errors:read", "errors:write"], 1).raw
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    made = client.post(
        "/api/v1/errors/projects/", {"name": "shop"}, content_type="application/json"
    )
    assert made.status_code == 201, made.content
    project = Project.objects.get()
    assert made.json()["dsn"] == f"http://{project.public_key}@localhost:8000/{project.pk}"
    again = client.post(
        "/api/v1/errors/projects/", {"name": "shop"}, content_type="application/json"
    )
    assert again.status_code == 422
    listed = client.get("/api/v1/errors/projects/").json()["projects"]
    assert [p["name"] for p in listed] == ["shop"]


def test_ip_addresses_are_kept_whole_only_when_the_project_says_so(
    org: Organization, members: dict[str, Any]
) -> None:
    project = services.add_project(org, "shop", SYSTEM)
    send(project, {"user": {"ip_address": "{{auto}}"}})
    client = signed_in(members["admin"])
    saved = client.post(
        f"/errors/{project.pk}/settings/", {"ip_mode": "keep", "hourly_quota": "50"}
    )
    assert saved.status_code == 302
    project.refresh_from_db()
    assert (project.ip_mode, project.hourly_quota) == ("keep", 50)
    send(project, {"user": {"ip_address": "{{auto}}"}})
    assert sorted(Event.objects.values_list("user_ip", flat=True)) == ["192.0.2.0", "192.0.2.9"]
    client.post(f"/errors/{project.pk}/settings/", {"ip_mode": "keep", "hourly_quota": "none"})
    project.refresh_from_db()
    assert project.hourly_quota == 50
