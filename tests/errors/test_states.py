"""Issue states (onwatch/errors/states.py and services.py): regressions decided by
release order, ignoring until a time, a count or a rate, resolving in the next release."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts.models import Incident
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Organization
from onwatch.deploys.models import Deploy, Release, State
from onwatch.errors import services
from onwatch.errors.models import Issue, Project
from tests.support.deploys import service_for
from tests.support.errors import crash, send
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def project(org: Organization) -> Project:
    made = services.add_project(org, "shop", SYSTEM)
    made.alert_new_issues = made.alert_regressions = False
    made.save()
    return made


def resolved_in(project: Project, release: str) -> Issue:
    send(project, crash("1.0.0"))
    issue = Issue.objects.get(project=project, title="KeyError: boom")
    services.resolve(issue, release, SYSTEM, timezone.now())
    return issue


def test_an_older_release_keeps_it_resolved_and_a_newer_one_reopens_it(project: Project) -> None:
    issue = resolved_in(project, "1.2.0")
    send(project, crash("1.1.0"))
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in, issue.event_count) == ("resolved", "1.2.0", 2)
    send(project, crash("1.2.1"))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", "1.2.1")
    assert AuditEntry.objects.filter(action="errors-issue-resolved", data__release="1.2.0")


@pytest.mark.parametrize(
    ("resolved", "older", "newer"),
    [
        ("1.10.0", "1.9.3", "1.10.1"),  # numbers, not text: "1.9" < "1.10"
        ("v2.0.0", "v2.0.0-rc.2", "v2.0.1"),  # a release candidate comes before
        ("shop@3.1", "shop@3.0.9", "shop@3.1.0"),  # 3.1 is 3.1.0: the same release
    ],
)
def test_versions_are_compared_as_versions(
    project: Project, resolved: str, older: str, newer: str
) -> None:
    issue = resolved_in(project, resolved)
    send(project, crash(older))
    issue.refresh_from_db()
    assert issue.state == "resolved"
    send(project, crash(newer))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", newer)


def test_the_order_onwatch_deployed_commits_wins_over_their_names(
    project: Project, org: Organization, tmp_path: Path
) -> None:
    service = service_for(org, str(tmp_path))
    start = timezone.now() - timedelta(hours=3)
    # Deployed in this order; as names, "fff…" would sort last and "aaa…" first.
    commits = ["f" * 40, "a" * 40, "c" * 40]
    for n, commit in enumerate(commits):
        release = Release.objects.create(service=service, commit=commit)
        Deploy.objects.create(
            service=service,
            release=release,
            trigger="cli",
            state=State.SUCCEEDED,
            ended_at=start + timedelta(hours=n),
        )
    services.link_service(project, service.pk, SYSTEM)
    issue = resolved_in(project, "a" * 40)
    send(project, crash("f" * 12))  # deployed before the fix: an SDK's short commit
    issue.refresh_from_db()
    assert issue.state == "resolved"
    send(project, crash("c" * 40))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", "c" * 40)


def test_names_that_are_no_versions_are_ordered_as_first_seen(project: Project) -> None:
    send(project, crash("blue", message="other"), crash("green", message="other"))
    issue = resolved_in(project, "green")  # seen after blue
    send(project, crash("blue"))
    issue.refresh_from_db()
    assert issue.state == "resolved"
    send(project, crash("red"))
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", "red")


def test_an_event_naming_no_release_reopens_a_resolved_issue(project: Project) -> None:
    issue = resolved_in(project, "1.2.0")
    send(project, crash(""))
    issue.refresh_from_db()
    assert issue.state == "unresolved"


def test_resolved_in_the_next_release_waits_for_a_newer_release(project: Project) -> None:
    send(project, crash("1.0.0"), crash("1.1.0", message="other"))
    issue = Issue.objects.get(title="KeyError: boom")
    services.resolve_in_next_release(issue, SYSTEM, timezone.now())
    assert (issue.state, issue.resolved_after) == ("resolved-next", "1.1.0")
    send(project, crash("1.0.0"), crash("1.1.0"))  # the releases out already: expected
    issue.refresh_from_db()
    assert issue.state == "resolved-next"
    send(project, crash("1.2.0", message="other"))  # the next release is out
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved", "1.2.0")
    send(project, crash("1.1.0"))
    issue.refresh_from_db()
    assert issue.state == "resolved"
    send(project, crash("1.2.0"))  # and the fix did not fix it
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("unresolved", "1.2.0")


def test_ignored_until_more_events_comes_back_after_that_many(project: Project) -> None:
    send(project, crash())
    issue = Issue.objects.get()
    services.ignore(issue, services.Ignore(events=3), SYSTEM, timezone.now())
    send(project, crash(), crash())
    issue.refresh_from_db()
    assert issue.state == "ignored"
    send(project, crash())
    issue.refresh_from_db()
    assert (issue.state, issue.event_count) == ("unresolved", 4)


def test_ignored_until_a_rate_comes_back_only_above_it(project: Project) -> None:
    send(project, crash())
    issue = Issue.objects.get()
    services.ignore(issue, services.Ignore(per_hour=2), SYSTEM, timezone.now())
    now = timezone.now().replace(minute=10)
    send(project, crash(), crash(), at=now)
    send(project, crash(), at=now + timedelta(hours=1))  # a new hour counts from 1
    issue.refresh_from_db()
    assert issue.state == "ignored"
    send(project, crash(), crash(), at=now + timedelta(hours=1, minutes=5))
    issue.refresh_from_db()
    assert issue.state == "unresolved"


def test_ignored_until_a_time_comes_back_after_it(project: Project) -> None:
    send(project, crash())
    issue = Issue.objects.get()
    now = timezone.now()
    services.ignore(issue, services.Ignore(until=now + timedelta(hours=1)), SYSTEM, now)
    send(project, crash(), at=now + timedelta(minutes=30))
    issue.refresh_from_db()
    assert issue.state == "ignored"
    send(project, crash(), at=now + timedelta(minutes=61))
    issue.refresh_from_db()
    assert issue.state == "unresolved"
    entry = AuditEntry.objects.get(action="errors-issue-ignored")
    assert entry.data["until"] == (now + timedelta(hours=1)).isoformat()


def test_ignoring_until_a_past_time_is_refused(project: Project) -> None:
    send(project, crash())
    issue = Issue.objects.get()
    now = timezone.now()
    with pytest.raises(services.Refusal, match="future"):
        services.ignore(issue, services.Ignore(until=now - timedelta(minutes=1)), SYSTEM, now)
    issue.refresh_from_db()
    assert issue.state == "unresolved"


def test_the_migration_notes_the_releases_earlier_events_named(project: Project) -> None:
    import importlib

    from django.apps import apps

    from onwatch.errors.models import Release

    migration = importlib.import_module("onwatch.errors.migrations.0002_states_issue_states")
    start = timezone.now()
    send(project, crash("blue"), at=start)
    send(project, crash("green"), crash("blue"), at=start + timedelta(minutes=1))
    Release.objects.all().delete()  # as before the migration: events, no releases noted
    migration.note_releases(apps, None)
    noted = Release.objects.filter(project=project).values_list("name", "first_seen")
    assert list(noted) == [("blue", start), ("green", start + timedelta(minutes=1))]


def test_a_release_seen_for_the_first_time_does_not_resolve_the_next_release_issue(
    project: Project, members: dict[str, Any]
) -> None:
    # Releases named by commit, with no linked service: onwatch cannot order them.
    project.alert_regressions = True
    project.save()
    send(project, crash("a" * 40))
    issue = Issue.objects.get()
    services.resolve_in_next_release(issue, SYSTEM, timezone.now())
    send(project, crash("b" * 40))  # an old client's first report, or the fix: unknown
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in, issue.regressed_in) == ("resolved-next", "", "")
    assert not Incident.objects.exists()  # no false "regressed" alert
    page = signed_in(members["viewer"]).get(f"/errors/issues/{issue.pk}/").content.decode()
    # The commit in its short form, as every errors page shows one.
    assert f"waiting for a release onwatch can order after {'a' * 12}</strong>" in page
    assert "a" * 13 not in page
    send(project, crash("1.0.0", message="other"), crash("2.0.0", message="other"))
    issue.refresh_from_db()
    assert issue.state == "resolved-next"  # versions are not ordered after a commit either


def test_resolving_without_a_release_takes_the_newest_it_was_seen_in(project: Project) -> None:
    send(project, crash("1.0.0"), crash("1.2.0"))
    send(project, crash("1.1.0"))  # the latest event, from an older client
    issue = Issue.objects.get()
    services.resolve(issue, "", SYSTEM, timezone.now())
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved", "1.2.0")
    send(project, crash("1.1.5"))
    issue.refresh_from_db()
    assert issue.state == "resolved"


def test_an_event_of_a_release_that_resolved_another_issue_is_counted_once(
    project: Project,
) -> None:
    send(project, crash("1.0.0"), crash("1.0.0", message="other"))
    ignored, waiting = Issue.objects.order_by("pk")
    services.ignore(ignored, services.Ignore(events=2), SYSTEM, timezone.now())
    services.resolve_in_next_release(waiting, SYSTEM, timezone.now())
    send(project, crash("1.1.0"))  # 1.1.0 resolves the other issue: one more event here
    ignored.refresh_from_db()
    waiting.refresh_from_db()
    assert (waiting.state, waiting.resolved_in) == ("resolved", "1.1.0")
    assert (ignored.state, ignored.event_count) == ("ignored", 2)
    send(project, crash("1.1.0"))  # the second more: it comes back now
    ignored.refresh_from_db()
    assert (ignored.state, ignored.event_count) == ("unresolved", 3)
