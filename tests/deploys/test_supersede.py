"""A newer pipeline of a branch cancels the older one still queued or running (through the
jobs' own cancel), saying which pipeline and commit superseded it, unless the service
says to test every push."""

from __future__ import annotations

from pathlib import Path

import pytest

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import JobState, Organization
from onwatch.deploys import services
from onwatch.deploys.models import Pipeline, PipelineStep, Service, State
from onwatch.deploys.services import Push, ServiceFields
from tests.support.deploys import beside_a_writer, commit, service_for
from tests.support.receivers import wait_until
from tests.support.releases import run_in_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel")]
NEWER = "b" * 40


def queue(service: Service, sha: str) -> Pipeline:
    return services.run_pipeline(service, SYSTEM, "webhook", Push(commit=sha))


def test_a_newer_push_cancels_the_queued_older_pipeline(org: Organization) -> None:
    service = service_for(org, "/nonexistent/shop.git")
    older = queue(service, "a" * 40)
    newer = queue(service, NEWER)
    older.refresh_from_db()
    assert older.job is not None and newer.job is not None
    older.job.refresh_from_db()
    assert (older.state, older.reason) == (
        State.CANCELLED,
        f"superseded by pipeline #{newer.pk} for bbbbbbb",
    )
    assert older.job.state == JobState.CANCELLED
    newer.refresh_from_db()
    assert newer.state == State.QUEUED and newer.job.state == JobState.QUEUED


def test_a_service_may_test_every_push(org: Organization) -> None:
    service = service_for(org, "/nonexistent/shop.git")
    fields = ServiceFields(name="shop", git_url=service.git_url, supersede=False)
    assert services.change_service(service, fields, SYSTEM) == ["supersede"]
    older = queue(service, "a" * 40)
    queue(service, NEWER)
    older.refresh_from_db()
    assert older.state == State.QUEUED


def test_a_newer_push_stops_the_running_older_pipeline(org: Organization, tmp_path: Path) -> None:
    slow = '[test]\ncommand = "exec sleep 600"\n'
    sha = commit(tmp_path / "repo", {"onwatch.toml": slow}, "Slow")
    service = service_for(org, str(tmp_path / "repo"))
    older = queue(service, sha)
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None and job.pk == older.job_id
    thread = run_in_thread(job)
    testing = PipelineStep.objects.filter(pipeline=older, name="test", state=State.RUNNING)
    wait_until(testing.exists, 60, "the step")
    newer = beside_a_writer(lambda: queue(service, NEWER))
    thread.join(timeout=30)
    assert not thread.is_alive(), "the older pipeline did not stop"
    older.refresh_from_db()
    job.refresh_from_db()
    assert (older.state, older.reason) == (
        State.CANCELLED,
        f"superseded by pipeline #{newer.pk} for bbbbbbb",
    )
    assert job.state == JobState.CANCELLED
    assert older.steps.get(name="test").state == State.CANCELLED
    assert Pipeline.objects.get(pk=newer.pk).state == State.QUEUED
