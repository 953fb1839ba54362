"""Polling a real local git repository through the scheduler's tick: a pushed commit is
queued once; a poll that keeps failing alerts once and says when it works again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from pydantic import ValidationError

from onwatch.core import scheduler
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import services
from onwatch.deploys.models import Pipeline, Service, Trigger
from onwatch.deploys.services import ServiceFields
from tests.support.backups import alerts_titled
from tests.support.deploys import commit, service_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("channel")]
MINUTE = timedelta(minutes=1)


def polling(service: Service, url: str = "", minutes: int = 1) -> None:
    fields = ServiceFields(name=service.name, git_url=url or service.git_url, poll_minutes=minutes)
    services.change_service(service, fields, SYSTEM)


def pipelines() -> list[tuple[str, str]]:
    return [(p.commit, p.trigger) for p in Pipeline.objects.order_by("pk")]


def test_a_pushed_commit_is_queued_by_one_tick_and_only_once(
    org: Organization, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = commit(repo, {"README": "one"}, "First")
    service = service_for(org, str(repo))
    now = timezone.now()
    scheduler.tick(now)
    assert pipelines() == []  # polling is off by default
    polling(service)
    scheduler.tick(now)
    # Never tested: the branch's newest commit is queued on the first poll.
    assert pipelines() == [(first, Trigger.POLL)]
    second = commit(repo, {"README": "two"}, "Second")
    scheduler.tick(now + MINUTE / 2)
    assert len(pipelines()) == 1  # not due yet
    scheduler.tick(now + MINUTE)
    assert pipelines() == [(first, Trigger.POLL), (second, Trigger.POLL)]
    scheduler.tick(now + 2 * MINUTE)
    assert len(pipelines()) == 2
    service.refresh_from_db()
    assert (service.polled_sha, service.poll_failures) == (second, 0)


def test_a_commit_a_webhook_already_queued_is_not_queued_again(
    org: Organization, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    sha = commit(repo, {"README": "one"}, "First")
    service = service_for(org, str(repo))
    services.run_pipeline(service, SYSTEM, "webhook", services.Push(commit=sha))
    polling(service)
    scheduler.tick(timezone.now())
    assert pipelines() == [(sha, Trigger.WEBHOOK)]


def test_failing_polls_alert_once_after_three_and_say_when_it_works_again(
    org: Organization, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    commit(repo, {"README": "one"}, "First")
    service = service_for(org, str(repo))
    polling(service, url=str(tmp_path / "gone"))
    now = timezone.now()
    for minute in range(2):
        scheduler.tick(now + minute * MINUTE)
    assert not alerts_titled("cannot check shop for new commits")
    for minute in range(2, 5):
        scheduler.tick(now + minute * MINUTE)
    [alert] = alerts_titled("cannot check shop for new commits")
    service.refresh_from_db()
    assert service.poll_failures == 5 and service.poll_failing_since is not None
    assert "could not fetch" in service.poll_error and str(tmp_path / "gone") in alert.body
    assert "Since: " in alert.body and "What to do:" in alert.body
    assert f"/services/{service.pk}/" in alert.body
    polling(service, url=str(repo))
    scheduler.tick(now + 6 * MINUTE)
    assert len(alerts_titled("polling works again")) == 1
    assert len(alerts_titled("cannot check shop for new commits")) == 1
    service.refresh_from_db()
    assert (service.poll_failures, service.poll_error, service.poll_alerted) == (0, "", False)
    assert len(pipelines()) == 1


def test_polling_is_at_most_once_a_minute() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ServiceFields(name="shop", git_url="/srv/git/shop.git", poll_minutes=0)
