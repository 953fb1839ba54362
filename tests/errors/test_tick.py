"""What the scheduler's tick does to issues without an event (onwatch/errors/tasks.py,
services.end_ignoring and resolve_deployed): an issue ignored until a time is unresolved
again once the time has passed, and a deployed fix resolves the issues waiting for the
next release. Through core's real tick, with its registered hooks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core import scheduler
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Organization
from onwatch.deploys.models import Deploy, Release, State
from onwatch.errors import services
from onwatch.errors.models import Issue, Project
from tests.support.deploys import service_for
from tests.support.errors import crash, send
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_an_issue_ignored_until_a_past_time_is_unresolved_by_the_tick(
    project: Project, org: Organization, members: dict[str, Any]
) -> None:
    add_channel(org, "hook", "json://127.0.0.1:9/in")  # deliveries are rows until sent
    now = timezone.now()
    send(project, crash(), at=now)
    issue = Issue.objects.get()
    until = now + timedelta(hours=1)
    services.ignore(issue, services.Ignore(until=until, events=50), SYSTEM, now)
    scheduler.tick(now + timedelta(minutes=59))
    issue.refresh_from_db()
    assert issue.state == "ignored"
    viewer = signed_in(members["viewer"])
    link = f"/errors/issues/{issue.pk}/"
    assert link not in viewer.get(f"/errors/{project.pk}/").content.decode()
    scheduler.tick(now + timedelta(minutes=61))
    issue.refresh_from_db()
    assert (issue.state, issue.state_changed_at) == ("unresolved", until)
    entry = AuditEntry.objects.get(action="errors-issue-unignored")
    assert (entry.actor, entry.data["until"]) == ("system", until.isoformat())
    assert link in viewer.get(f"/errors/{project.pk}/").content.decode()  # unresolved, listed
    scheduler.tick(now + timedelta(minutes=62))
    assert AuditEntry.objects.filter(action="errors-issue-unignored").count() == 1
    # Its next event is news, as it was when the event itself ended the ignoring.
    send(project, crash(), at=now + timedelta(hours=2))
    assert [d.title for d in Delivery.objects.all()] == ["shop: KeyError: boom is back"]
    send(project, crash(), at=now + timedelta(hours=2))
    assert Delivery.objects.count() == 1  # and only that one
    issue.refresh_from_db()
    assert (issue.state, issue.ignored_until) == ("unresolved", None)


def test_a_deployed_release_resolves_the_issue_waiting_for_the_next_release(
    project: Project, org: Organization, tmp_path: Path
) -> None:
    service = service_for(org, str(tmp_path))
    services.link_service(project, service.pk, SYSTEM)
    start = timezone.now() - timedelta(hours=3)

    def deployed(commit: str, hours: int) -> None:
        release = Release.objects.create(service=service, commit=commit)
        Deploy.objects.create(
            service=service,
            release=release,
            trigger="cli",
            state=State.SUCCEEDED,
            ended_at=start + timedelta(hours=hours),
        )

    deployed("f" * 40, 0)
    deployed("a" * 40, 1)
    send(project, crash("a" * 12))  # as an SDK names a commit
    issue = Issue.objects.get()
    services.resolve_in_next_release(issue, SYSTEM, start + timedelta(minutes=90))
    scheduler.tick()
    issue.refresh_from_db()
    assert issue.state == "resolved-next"  # nothing deployed after it yet
    deployed("c" * 40, 2)  # the fix: it sends no event that would name its release
    scheduler.tick()
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved", "c" * 40)
    entry = AuditEntry.objects.get(action="errors-issue-resolved")
    assert (entry.actor, entry.data["release"], entry.data["by"]) == ("system", "c" * 40, "deploy")
    send(project, crash("f" * 12))  # an old client still out there
    issue.refresh_from_db()
    assert issue.state == "resolved"
    send(project, crash("c" * 12))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", "c" * 12)


@pytest.mark.parametrize("named_first_by", ["tick", "event"])
def test_a_release_live_before_the_issue_was_marked_is_not_its_next_release(
    project: Project,
    org: Organization,
    tmp_path: Path,
    named_first_by: str,
    members: dict[str, Any],
) -> None:
    add_channel(org, "hook", "json://127.0.0.1:9/in")  # deliveries are rows until sent
    project.alert_regressions = True
    project.save()
    service = service_for(org, str(tmp_path))
    services.link_service(project, service.pk, SYSTEM)
    now = timezone.now()

    def deployed(commit: str, at: Any) -> None:
        release = Release.objects.create(service=service, commit=commit)
        Deploy.objects.create(
            service=service, release=release, trigger="cli", state=State.SUCCEEDED, ended_at=at
        )

    deployed("a" * 40, now - timedelta(hours=2))
    send(project, crash("a" * 12), at=now - timedelta(hours=1))
    # C goes live; no event names it yet when someone marks the issue.
    deployed("c" * 40, now - timedelta(minutes=30))
    issue = Issue.objects.get()
    services.resolve_in_next_release(issue, SYSTEM, now)
    if named_first_by == "tick":
        scheduler.tick(now + timedelta(minutes=1))
        issue.refresh_from_db()
        assert issue.state == "resolved-next"
    send(project, crash("c" * 12), at=now + timedelta(minutes=2))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("resolved-next", "")
    assert not Delivery.objects.exists()
    # The pages say the rule that kept it waiting: C is newer, but was live already.
    viewer = signed_in(members["viewer"])
    rule = f"waiting for a release newer than {'a' * 12} that goes live after it was marked"
    assert rule in viewer.get(f"/errors/issues/{issue.pk}/").content.decode()
    assert rule in viewer.get(f"/errors/{project.pk}/?state=all").content.decode()
    # The fix goes live after the click: that is the next release.
    deployed("d" * 40, now + timedelta(minutes=10))
    scheduler.tick(now + timedelta(minutes=11))
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved", "d" * 40)
    send(project, crash("c" * 12), at=now + timedelta(minutes=12))
    issue.refresh_from_db()
    assert issue.state == "resolved" and not Delivery.objects.exists()
