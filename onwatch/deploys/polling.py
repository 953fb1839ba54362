"""Polling, the fallback for a repository that cannot send webhooks: every few minutes
(the service's choice) ask for its branch's newest commit, in a job of its own, and queue a
pipeline when it moved. Polls that keep failing alert once, and say so when polling works again."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from django.db import transaction
from django.db.models import Q
from django.urls import reverse

from onwatch.alerts.services import raise_alert
from onwatch.core import jobs, ssh
from onwatch.core.audit import Actor
from onwatch.core.models import Job, JobState
from onwatch.deploys import git, services
from onwatch.deploys.models import Pipeline, Service
from onwatch.deploys.services import Push

KIND = services.POLL_KIND
ALERT_AFTER = 3
POLLER = Actor("polling")


def due(now: datetime) -> list[Service]:
    """Services whose poll is due: never polled, or polled longer ago than they ask."""
    asking = Service.objects.filter(poll_minutes__isnull=False).select_related("org")
    return [s for s in asking if s.polled_at is None or is_due(s, now)]


def is_due(service: Service, now: datetime) -> bool:
    assert service.poll_minutes is not None and service.polled_at is not None
    return service.polled_at + timedelta(minutes=service.poll_minutes) <= now


def queue_due(now: datetime) -> int:
    """The scheduler's tick: one poll job per due service, in the short queue, so a slow
    remote holds up its own poll only, never the tick (escalations, heartbeats) nor other
    services' polls. None for a service whose last poll is still queued or running. Returns
    the jobs queued."""
    queued = 0
    for service in due(now):
        if under_way(service):
            continue
        with transaction.atomic():
            if not claim(service, now):
                continue  # another scheduler queued it
            payload = {"service": service.pk, "due": now.isoformat()}
            jobs.enqueue(KIND, payload, org=service.org)
        queued += 1
    return queued


def under_way(service: Service) -> bool:
    mine = Job.objects.filter(kind=KIND, payload__service=service.pk)
    return mine.filter(state__in=(JobState.QUEUED, JobState.RUNNING)).exists()


def claim(service: Service, now: datetime) -> bool:
    """Mark the poll as taken, unless another scheduler took it first."""
    unchanged = Q(polled_at=service.polled_at) if service.polled_at else Q(polled_at=None)
    return bool(Service.objects.filter(unchanged, pk=service.pk).update(polled_at=now))


def poll(service: Service, now: datetime) -> Pipeline | None:
    """Ask for the branch's newest commit; queue a pipeline of it when it moved and no
    pipeline of the branch has it yet (a webhook may have queued one). The pipeline, or
    None."""
    try:
        sha = ask(service)
    except (git.GitError, ssh.SshError) as e:
        failed(services.note_poll(service, now, error=str(e)))
        return None
    before = service.polled_sha
    recovered(services.note_poll(service, now, sha=sha))
    if sha == before or services.tested(service, sha):
        return None
    return services.run_pipeline(service, POLLER, "poll", Push(commit=sha))


def ask(service: Service) -> str:
    with (
        tempfile.TemporaryDirectory(prefix="onwatch-poll-") as home,
        services.ssh_session(service) as session,
    ):
        env = git.environment(Path(home), session.git_command() if session else "")
        ssh_log = session.log_text if session else str
        return git.newest_commit(service.git_url, service.branch, env, ssh_log)


def failed(service: Service) -> None:
    if service.poll_failures < ALERT_AFTER or service.poll_alerted:
        return
    since = service.poll_failing_since
    raise_alert(
        org=service.org,
        title=f"onwatch cannot check {service.name} for new commits",
        body="\n".join(
            [
                f"What is wrong: the last {service.poll_failures} checks of branch "
                f"{service.branch} failed: {service.poll_error}",
                f"Since: {since:%Y-%m-%d %H:%M} UTC" if since else "",
                "What it means: new commits are not tested until this is fixed.",
                "What to do: check the repository's address and that it still has the "
                "service's deploy key; onwatch keeps trying and says when it works again.",
            ]
        ),
        link=reverse("service_detail", args=[service.pk]),
    )
    services.note_poll_alerted(service, True)


def recovered(service: Service) -> None:
    if not service.poll_alerted:
        return
    raise_alert(
        org=service.org,
        title=f"onwatch can check {service.name} for new commits again: polling works again",
        body=f"Checking branch {service.branch} for new commits works again.",
        link=reverse("service_detail", args=[service.pk]),
        notify_type="success",
    )
    services.note_poll_alerted(service, False)
