"""The issue list's state filters and bulk actions, the issue page's actions (split
included), the project's alert settings, and the same through the API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Organization
from onwatch.core.services import issue_token
from onwatch.errors import intake, services
from onwatch.errors.models import Event, Issue, Project
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def crash(kind: str, release: str = "1.0.0") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": kind, "value": "boom"}]},
    }


@pytest.fixture
def project(org: Organization) -> Project:
    made = services.add_project(org, "shop", SYSTEM)
    events = [crash("KeyError"), crash("ValueError"), crash("OSError")]
    services.take(intake.Incoming(made.pk, made.public_key, "", events), timezone.now())
    return made


def issue(title: str) -> Issue:
    return Issue.objects.get(title=f"{title}: boom")


def test_the_list_shows_unresolved_issues_first_and_filters_by_state(
    project: Project, members: dict[str, Any]
) -> None:
    services.resolve(issue("KeyError"), "1.0.0", SYSTEM, timezone.now())
    later = timezone.now() + timedelta(days=1)
    services.ignore(issue("OSError"), services.Ignore(until=later), SYSTEM, timezone.now())
    viewer = signed_in(members["viewer"])
    page = viewer.get(f"/errors/{project.pk}/").content.decode()
    assert "ValueError: boom" in page and "KeyError: boom" not in page
    assert "Unresolved (1)" in page and "Resolved (1)" in page and "All (3)" in page
    assert 'name="issue"' not in page  # a viewer gets no bulk actions
    resolved = viewer.get(f"/errors/{project.pk}/?state=resolved").content.decode()
    assert "KeyError: boom" in resolved and "Resolved in 1.0.0" in resolved
    ignored = viewer.get(f"/errors/{project.pk}/?state=ignored").content.decode()
    assert f"Ignored until {later:%Y-%m-%d %H:%M} UTC" in ignored


def test_a_deployer_resolves_several_issues_at_once(
    project: Project, members: dict[str, Any]
) -> None:
    ids = [issue("KeyError").pk, issue("ValueError").pk]
    client = signed_in(members["deployer"])
    done = client.post(
        f"/errors/{project.pk}/issues/",
        {"issue": ids, "action": "resolve", "release": "1.1.0", "shown": "unresolved"},
    )
    assert done.status_code == 302 and done["Location"] == f"/errors/{project.pk}/?state=unresolved"
    assert sorted(Issue.objects.filter(state="resolved").values_list("resolved_in", flat=True)) == [
        "1.1.0",
        "1.1.0",
    ]
    assert AuditEntry.objects.filter(action="errors-issue-resolved").count() == 2
    page = client.get(done["Location"]).content.decode()
    assert "Resolved: 2 issues." in page


def test_ignoring_without_a_condition_is_refused_in_one_line(
    project: Project, members: dict[str, Any]
) -> None:
    client = signed_in(members["deployer"])
    done = client.post(
        f"/errors/{project.pk}/issues/", {"issue": [issue("KeyError").pk], "action": "ignore"}
    )
    page = client.get(done["Location"]).content.decode()
    assert "Say until when to ignore it" in page
    assert issue("KeyError").state == "unresolved"
    client.post(
        f"/errors/issues/{issue('KeyError').pk}/state/", {"action": "ignore", "events": "50"}
    )
    assert (issue("KeyError").state, issue("KeyError").ignored_until_count) == ("ignored", 51)


def test_a_viewer_cannot_change_an_issue(project: Project, members: dict[str, Any]) -> None:
    answer = signed_in(members["viewer"]).post(
        f"/errors/issues/{issue('KeyError').pk}/state/", {"action": "resolve"}
    )
    assert answer.status_code == 403
    assert issue("KeyError").state == "unresolved"


def test_issues_are_merged_from_the_list_and_split_from_the_issue_page(
    project: Project, members: dict[str, Any]
) -> None:
    services.take(
        intake.Incoming(project.pk, project.public_key, "", [crash("KeyError")]), timezone.now()
    )
    kept, other = issue("KeyError"), issue("ValueError")
    client = signed_in(members["deployer"])
    client.post(f"/errors/{project.pk}/issues/", {"issue": [kept.pk, other.pk], "action": "merge"})
    kept.refresh_from_db()
    assert kept.event_count == 3
    page = client.get(f"/errors/issues/{kept.pk}/").content.decode()
    assert "Merged in" in page and "ValueError: boom" in page
    moved = Event.objects.get(merged_from=other)
    split = client.post(f"/errors/issues/{kept.pk}/split/", {"event": str(moved.pk)})
    assert split["Location"] == f"/errors/issues/{other.pk}/"
    kept.refresh_from_db()
    assert (kept.event_count, issue("ValueError").state) == (2, "unresolved")


def test_the_alert_settings_and_the_linked_service_are_saved(
    project: Project, members: dict[str, Any]
) -> None:
    client = signed_in(members["admin"])
    client.post(
        f"/errors/{project.pk}/alerts/",
        {"regressions": "on", "volume_events": "20", "volume_minutes": "5", "service": ""},
    )
    project.refresh_from_db()
    assert (project.alert_new_issues, project.alert_regressions) == (False, True)
    assert (project.volume_events, project.volume_minutes) == (20, 5)
    assert AuditEntry.objects.filter(action="errors-alerts-changed").exists()
    refused = client.post(
        f"/errors/{project.pk}/alerts/", {"volume_events": "20", "volume_minutes": "0"}
    )
    assert "within 1 to 1,440 minutes" in client.get(refused["Location"]).content.decode()


def test_issues_are_listed_resolved_merged_and_split_through_the_api(
    project: Project, members: dict[str, Any], org: Organization
) -> None:
    scopes = ["errors:read", "errors:triage"]
    raw = issue_token(members["deployer"], org, "ci", scopes, 1).raw
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    listed = api.get(f"/api/v1/errors/issues/?project={project.pk}").json()["issues"]
    assert sorted(i["title"] for i in listed) == [
        "KeyError: boom",
        "OSError: boom",
        "ValueError: boom",
    ]
    key = issue("KeyError")
    done = api.post(
        f"/api/v1/errors/issues/{key.pk}/state/",
        {"action": "resolve", "release": "2.0"},
        content_type="application/json",
    )
    assert done.status_code == 200, done.content
    assert (done.json()["state"], done.json()["resolved_in"]) == ("resolved", "2.0")
    bad = api.post(
        f"/api/v1/errors/issues/{key.pk}/state/",
        {"action": "ignore"},
        content_type="application/json",
    )
    assert bad.status_code == 422 and "until, events or per_hour" in bad.json()["error"]
    other = issue("OSError")
    merged = api.post(
        "/api/v1/errors/issues/merge/",
        {"issues": [issue("ValueError").pk, other.pk]},
        content_type="application/json",
    )
    assert merged.status_code == 200 and merged.json()["event_count"] == 2
    event = Event.objects.get(merged_from=other)
    split = api.post(
        f"/api/v1/errors/issues/{issue('ValueError').pk}/split/",
        {"event_id": event.event_id},
        content_type="application/json",
    )
    assert split.status_code == 200 and split.json()["id"] == other.pk
    resolved = api.get(f"/api/v1/errors/issues/?project={project.pk}&state=resolved").json()
    assert [i["title"] for i in resolved["issues"]] == ["KeyError: boom"]
    assert api.get("/api/v1/errors/issues/?state=x").status_code == 422


def test_commit_ids_as_release_names_are_shown_short_and_versions_whole(
    project: Project, members: dict[str, Any]
) -> None:
    """Apps deployed by onwatch often name their release by commit: 40 characters in every
    column made the list unreadable. Pages show the first 12, as the deploy pages do; the
    latest event keeps the whole id, and version names stay as they are."""
    old, new = (
        "804c312cedf452c3b68368307696442fd639d4ed",
        "73d4baaa67784ace351d609c6e071aed4e0d2ca8",
    )
    sent = [crash("LookupError", release=old), crash("LookupError", release=new)]
    services.take(intake.Incoming(project.pk, project.public_key, "", sent), timezone.now())
    services.resolve(issue("LookupError"), new, SYSTEM, timezone.now())
    viewer = signed_in(members["viewer"])
    listed = viewer.get(f"/errors/{project.pk}/?state=all").content.decode()
    assert f"{old[:12]} → {new[:12]}" in listed and old not in listed
    assert "1.0.0" in listed  # a version name, whole
    assert f"Resolved in {new[:12]}" in listed
    page = viewer.get(f"/errors/issues/{issue('LookupError').pk}/").content.decode()
    assert f"in {old[:12]}, last seen" in page
    assert f"release {new}." in page  # the latest event: the whole id
