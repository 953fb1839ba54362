"""Polling a real local git repository through the scheduler's tick: a pushed commit is
queued once; a poll that keeps failing alerts once and says when it works again."""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from pydantic import ValidationError

from onwatch.core import jobs, scheduler
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState, Organization
from onwatch.deploys import polling as polls
from onwatch.deploys import services
from onwatch.deploys.models import Pipeline, Service, Trigger
from onwatch.deploys.services import ServiceFields
from tests.support.backups import alerts_titled
from tests.support.deploys import commit, service_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("channel")]
MINUTE = timedelta(minutes=1)


def tick(now: datetime) -> None:
    """The scheduler's tick, then the poll jobs it queued."""
    scheduler.tick(now)
    jobs.run_pending(kinds=[polls.KIND])


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
    tick(now)
    assert pipelines() == []  # polling is off by default
    polling(service)
    tick(now)
    # Never tested: the branch's newest commit is queued on the first poll.
    assert pipelines() == [(first, Trigger.POLL)]
    second = commit(repo, {"README": "two"}, "Second")
    tick(now + MINUTE / 2)
    assert len(pipelines()) == 1  # not due yet
    tick(now + MINUTE)
    assert pipelines() == [(first, Trigger.POLL), (second, Trigger.POLL)]
    tick(now + 2 * MINUTE)
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
    tick(timezone.now())
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
        tick(now + minute * MINUTE)
    assert not alerts_titled("cannot check shop for new commits")
    for minute in range(2, 5):
        tick(now + minute * MINUTE)
    [alert] = alerts_titled("cannot check shop for new commits")
    service.refresh_from_db()
    assert service.poll_failures == 5 and service.poll_failing_since is not None
    assert "could not fetch" in service.poll_error and str(tmp_path / "gone") in alert.body
    assert "Since: " in alert.body and "What to do:" in alert.body
    assert f"/services/{service.pk}/" in alert.body
    polling(service, url=str(repo))
    tick(now + 6 * MINUTE)
    assert len(alerts_titled("polling works again")) == 1
    assert len(alerts_titled("cannot check shop for new commits")) == 1
    service.refresh_from_db()
    assert (service.poll_failures, service.poll_error, service.poll_alerted) == (0, "", False)
    assert len(pipelines()) == 1


def test_polling_is_at_most_once_a_minute() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ServiceFields(name="shop", git_url="/srv/git/shop.git", poll_minutes=0)


# The tick runs on a thread of its own, which sees only what was committed.
@pytest.mark.django_db(transaction=True)
def test_a_remote_that_never_answers_delays_neither_the_tick_nor_a_second_poll(
    org: Organization,
) -> None:
    """The tick queues the poll as a job of the short queue and returns; while that job
    is queued or running, later ticks queue no second poll of the same service."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        service = service_for(org, f"https://127.0.0.1:{silent.getsockname()[1]}/shop.git")
        polling(service)
        now = timezone.now()
        ticked = threading.Thread(target=scheduler.tick, args=(now,), daemon=True)
        ticked.start()
        ticked.join(5)
        assert not ticked.is_alive(), "the tick waited for the remote"
        assert Job.objects.filter(kind=polls.KIND).count() == 1
        for minute in (1, 2):
            scheduler.tick(now + minute * MINUTE)
        [job] = Job.objects.filter(kind=polls.KIND)
        assert (job.queue, job.state, job.payload["service"]) == (
            "short",
            JobState.QUEUED,
            service.pk,
        )
        Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING)
        scheduler.tick(now + 3 * MINUTE)
        assert Job.objects.filter(kind=polls.KIND).count() == 1
        Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
        scheduler.tick(now + 4 * MINUTE)
        assert Job.objects.filter(kind=polls.KIND).count() == 2
