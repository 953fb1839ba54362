"""When a release went live: the moment its switch let Caddy send it requests, not the
deploy's end (which waits for the old release to drain). The errors app asks it whether a
release was already out when someone clicked "resolved in the next release"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from onwatch.core import jobs, scheduler
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import releases, services
from onwatch.deploys.models import Deploy, Release, Service, State
from onwatch.deploys.switch import Machine
from onwatch.errors import intake
from onwatch.errors import services as errors
from onwatch.errors.models import Issue, Project
from tests.support.deploys import commit, service_for
from tests.support.fixtures import signed_in
from tests.support.releases import app_files
from tests.support.switching import own_machine

A, C, D = "a" * 40, "c" * 40, "d" * 40


def crash(release: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": "KeyError", "value": "boom"}]},
    }


def send(project: Project, release: str, at: datetime) -> None:
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", [crash(release)])
    errors.take(incoming, at)


def linked_project(org: Organization, service: Service) -> Project:
    project = errors.add_project(org, "shop", SYSTEM)
    project.alert_new_issues = False
    project.save()
    errors.link_service(project, service.pk, SYSTEM)
    return project


def switched(service: Service, sha: str, at: datetime) -> Deploy:
    """A deploy whose switch made `sha` live at `at`; it still drains the old release."""
    release = Release.objects.create(service=service, commit=sha)
    deploy = Deploy.objects.create(
        service=service, release=release, trigger="cli", state=State.RUNNING
    )
    services.deploy_switched(deploy, at)
    return deploy


@pytest.mark.django_db
def test_a_click_between_the_switch_and_the_deploys_end_finds_the_release_out_already(
    org: Organization, tmp_path: Path
) -> None:
    service = service_for(org, str(tmp_path))
    project = linked_project(org, service)
    now = timezone.now()
    first = switched(service, A, now - timedelta(hours=2))
    services.deploy_ended(first, State.SUCCEEDED, "", "release a")
    send(project, A[:12], now - timedelta(hours=1))
    issue = Issue.objects.get()
    # C serves from its switch on; its deploy still drains A when the issue is marked.
    draining = switched(service, C, now - timedelta(minutes=2))
    errors.resolve_in_next_release(issue, SYSTEM, now - timedelta(minutes=1))
    scheduler.tick(now)
    services.deploy_ended(draining, State.SUCCEEDED, "", "release c")  # ends after the click
    assert services.first_live(service.pk) == {A: first.switched_at, C: draining.switched_at}
    scheduler.tick(timezone.now())
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved-next", "")  # C is not the next one
    send(project, C[:12], timezone.now())  # C's events were expected: no regression
    issue.refresh_from_db()
    assert (issue.state, issue.regressed_in) == ("resolved-next", "")
    # D goes live after the click: that is the next release.
    services.deploy_ended(switched(service, D, timezone.now()), State.SUCCEEDED, "", "d")
    scheduler.tick(timezone.now())
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved", D)


@pytest.mark.django_db
def test_deploys_from_before_the_switch_was_kept_went_live_at_their_end(
    org: Organization, tmp_path: Path
) -> None:
    service = service_for(org, str(tmp_path))
    ended = timezone.now() - timedelta(hours=1)
    old = Release.objects.create(service=service, commit=A)
    Deploy.objects.create(
        service=service, release=old, trigger="cli", state=State.SUCCEEDED, ended_at=ended
    )
    later = switched(service, C, timezone.now() - timedelta(minutes=5))
    # One that failed before its switch made nothing live.
    failed = Release.objects.create(service=service, commit=D)
    Deploy.objects.create(service=service, release=failed, trigger="cli", state=State.FAILED)
    assert services.first_live(service.pk) == {A: ended, C: later.switched_at}


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    with own_machine() as m:
        monkeypatch.setattr(releases, "machine", lambda: m)
        yield m


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
def test_a_real_deploy_went_live_at_its_switch_and_a_click_while_it_drains_waits(
    machine: Machine, org: Organization, members: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    repo = tmp_path / "repo"
    first_sha = commit(repo, app_files("v1"), "First version")
    service = service_for(org, str(repo))
    services.set_domain(service, "shop.test", False, SYSTEM)
    project = linked_project(org, service)
    services.queue_deploy(service, SYSTEM, "cli")
    jobs.run_pending(kinds=[services.DEPLOY_KIND])
    send(project, first_sha[:12], timezone.now())
    issue = Issue.objects.get()
    second_sha = commit(repo, app_files("v2"), "Second version")
    clicked: list[datetime] = []
    step = services.deploy_step

    def click_while_draining(deploy: Deploy, row: dict[str, Any]) -> None:
        step(deploy, row)
        if row["name"] == "drain" and not clicked:
            clicked.append(timezone.now())
            errors.resolve_in_next_release(issue, SYSTEM, clicked[0])

    monkeypatch.setattr(services, "deploy_step", click_while_draining)
    second = services.queue_deploy(service, SYSTEM, "cli")
    jobs.run_pending(kinds=[services.DEPLOY_KIND])
    second.refresh_from_db()
    assert second.state == State.SUCCEEDED, (second.reason, second.steps)
    move = next(s for s in second.steps if s["name"] == "switch")
    assert second.switched_at is not None and second.ended_at is not None
    at = datetime.fromisoformat
    assert at(move["started"]) <= second.switched_at <= at(move["ended"])
    assert second.switched_at < clicked[0] < second.ended_at
    assert services.first_live(service.pk)[second_sha] == second.switched_at
    scheduler.tick(timezone.now())
    issue.refresh_from_db()
    assert (issue.state, issue.resolved_in) == ("resolved-next", "")
    viewer = signed_in(members["viewer"])
    page = viewer.get(reverse("deploy_detail", args=[second.pk])).content.decode()
    assert "Went live" in page and f"{timezone.localtime(second.switched_at):%H:%M:%S}" in page
