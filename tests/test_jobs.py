from __future__ import annotations

from typing import Any

import pytest

from onwatch.core import jobs
from onwatch.core.models import Job, JobState


@jobs.handler("tests.ok")
def _ok(ctx: jobs.JobContext) -> dict[str, Any]:
    ctx.log("hello")
    return {"answer": 42}


@jobs.handler("tests.boom")
def _boom(ctx: jobs.JobContext) -> None:
    raise RuntimeError("kaput")


@pytest.mark.django_db
def test_a_job_runs_to_succeeded_with_log_and_result() -> None:
    job = jobs.enqueue("tests.ok")
    [done] = jobs.run_pending(kinds=["tests.ok"])
    assert done.pk == job.pk
    assert done.state == JobState.SUCCEEDED
    assert done.result == {"answer": 42}
    assert "hello" in done.log
    assert done.finished_at is not None and done.attempts == 1


@pytest.mark.django_db
def test_a_crashing_job_ends_failed_with_its_error() -> None:
    jobs.enqueue("tests.boom")
    [done] = jobs.run_pending(kinds=["tests.boom"])
    assert done.state == JobState.FAILED
    assert done.error == "RuntimeError: kaput"
    assert "Traceback" in done.log


@pytest.mark.django_db
def test_a_claimed_job_cannot_be_claimed_again() -> None:
    jobs.enqueue("tests.ok")
    first = jobs.claim("w1", ["tests.ok"])
    assert first is not None and first.state == JobState.RUNNING
    assert jobs.claim("w2", ["tests.ok"]) is None


@pytest.mark.django_db
def test_an_unknown_kind_fails_with_a_clear_error() -> None:
    jobs.enqueue("tests.nobody-handles-this")
    [done] = jobs.run_pending(kinds=["tests.nobody-handles-this"])
    assert done.state == JobState.FAILED
    assert "no handler" in done.error


@pytest.mark.django_db
def test_an_expired_lease_marks_the_job_interrupted() -> None:
    from datetime import timedelta

    from django.utils import timezone

    jobs.enqueue("tests.ok")
    claimed = jobs.claim("dead-worker", ["tests.ok"])
    assert claimed is not None
    Job.objects.filter(pk=claimed.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    [reaped] = jobs.reap_expired()
    assert reaped.state == JobState.INTERRUPTED
    assert "dead-worker" in reaped.error
    assert reaped.alerted


@pytest.mark.django_db
def test_a_job_with_attempts_left_is_queued_again_when_its_worker_dies() -> None:
    from datetime import timedelta

    from django.utils import timezone

    jobs.enqueue("tests.ok", max_attempts=3)
    claimed = jobs.claim("dead-worker", ["tests.ok"])
    assert claimed is not None
    Job.objects.filter(pk=claimed.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    [reaped] = jobs.reap_expired()
    assert reaped.state == JobState.QUEUED and reaped.attempts == 1
    assert "dead-worker" in reaped.error and "trying again" in reaped.log
    assert not reaped.alerted and reaped.run_after > timezone.now()
    Job.objects.filter(pk=reaped.pk).update(run_after=timezone.now())
    [done] = jobs.run_pending(kinds=["tests.ok"])
    assert (done.pk, done.state, done.attempts) == (reaped.pk, JobState.SUCCEEDED, 2)


@pytest.mark.django_db
def test_a_job_goes_to_the_queue_its_handler_declares_and_only_that_queue_claims_it() -> None:
    long = jobs.enqueue("core.sleep", {"seconds": 0})
    short = jobs.enqueue("core.noop")
    assert (long.queue, short.queue) == ("long", "short")
    assert jobs.QUEUE_OF["alerts.deliver"] == "alerts"
    assert jobs.claim("w1", queues=["alerts"]) is None
    claimed = jobs.claim("w1", queues=["long"])
    assert claimed is not None and claimed.pk == long.pk


def test_a_handler_in_an_unknown_queue_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="queue 'slow' is none of alerts, short, long"):
        jobs.handler("tests.slow", queue="slow")
