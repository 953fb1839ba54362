from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from onwatch.core import jobs, scheduler
from onwatch.core.models import Job, JobState, Schedule


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


@jobs.handler("tests.chatty")
def _chatty(ctx: jobs.JobContext) -> dict[str, Any]:
    for n in range(3):
        ctx.log(f"line {n}")
    # Mid-run: each line is a row of its own and the whole text is not rewritten.
    job = Job.objects.get(pk=ctx.job.pk)
    return {"lines": job.log_lines.count(), "log_while_running": job.log.count("line ")}


@pytest.mark.django_db
def test_a_jobs_log_is_its_lines_stored_once_while_it_runs_and_after() -> None:
    jobs.enqueue("tests.chatty")
    [done] = jobs.run_pending(kinds=["tests.chatty"])
    assert done.result == {"lines": 3, "log_while_running": 3}
    assert [line.split(" ", 1)[1] for line in done.log.splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]
    # Not copied into the job's row at the end: the lines are the one place.
    assert Job.objects.filter(pk=done.pk).values_list("old_log", flat=True).get() == ""


@pytest.mark.django_db
def test_the_log_lines_of_jobs_ended_long_ago_are_aged_out_with_a_note() -> None:
    now = timezone.now()
    old, recent, running = (jobs.enqueue("tests.chatty") for _ in range(3))
    for job in (old, recent, running):
        jobs.append_line(job.pk, "12:00:00 copying files")
    Job.objects.filter(pk=old.pk).update(
        state=JobState.FAILED, finished_at=now - timedelta(days=31)
    )
    Job.objects.filter(pk=recent.pk).update(
        state=JobState.FAILED, finished_at=now - timedelta(days=29)
    )
    Job.objects.filter(pk=running.pk).update(
        state=JobState.RUNNING, started_at=now - timedelta(days=40)
    )
    assert jobs.age_out_logs(now, 30) == 1
    old.refresh_from_db()
    assert old.log == "(the log of this job was removed 30 days after it ended)"
    assert not old.log_lines.exists()
    assert recent.log == running.log == "12:00:00 copying files"
    assert jobs.age_out_logs(now, 30) == 0


@pytest.mark.django_db
def test_the_nightly_clean_up_of_job_logs_is_a_built_in_schedule() -> None:
    scheduler.ensure_builtin()
    made = Schedule.objects.get(org=None, name="Job log clean-up")
    assert (made.kind, made.cron, made.tz) == ("core.age_out_logs", "17 4 * * *", "UTC")
    jobs.enqueue(made.kind)
    [done] = jobs.run_pending(kinds=[made.kind])
    assert done.state == JobState.SUCCEEDED and done.result == {"jobs": 0, "days": 30}


@pytest.mark.django_db
def test_a_queued_job_is_cancelled_at_once_audited_and_an_ended_one_refuses() -> None:
    from onwatch.core.models import AuditEntry

    job = jobs.enqueue("tests.ok")
    done = jobs.cancel(job, "ana@example.com")
    assert (done.state, done.error) == (JobState.CANCELLED, "cancelled by ana@example.com")
    assert "cancelled by ana@example.com before it started" in done.log
    assert jobs.run_pending(kinds=["tests.ok"]) == []
    entry = AuditEntry.objects.get(action="job-cancelled")
    assert (entry.actor, entry.target) == ("ana@example.com", f"tests.ok #{job.pk}")
    with pytest.raises(jobs.NotCancellable, match=r"already ended \(cancelled\)"):
        jobs.cancel(done, "ana@example.com")


@pytest.mark.django_db
def test_a_job_waits_for_the_one_it_comes_after_and_runs_once_that_one_succeeded() -> None:
    first = jobs.enqueue("tests.ok")
    second = jobs.enqueue("tests.ok", after=first)
    # Only the first can start: the second is not due while the first has not ended.
    claimed = jobs.claim("w1", ["tests.ok"])
    assert claimed is not None and claimed.pk == first.pk
    assert jobs.claim("w2", ["tests.ok"]) is None
    jobs.run(claimed, "w1")
    [ran] = jobs.run_pending(kinds=["tests.ok"])
    assert (ran.pk, ran.state) == (second.pk, JobState.SUCCEEDED)


@pytest.mark.django_db
def test_jobs_waiting_for_a_failed_job_are_cancelled_saying_why_down_the_chain() -> None:
    failing = jobs.enqueue("tests.boom")
    deploy = jobs.enqueue("tests.ok", after=failing)
    after_deploy = jobs.enqueue("tests.ok", after=deploy)
    [done] = jobs.run_pending(kinds=["tests.boom", "tests.ok"])
    assert done.pk == failing.pk and done.state == JobState.FAILED
    deploy.refresh_from_db()
    after_deploy.refresh_from_db()
    assert deploy.state == after_deploy.state == JobState.CANCELLED
    assert deploy.error == f"not started: job #{failing.pk} (tests.boom) it waits for ended failed"
    assert f"job #{deploy.pk} (tests.ok) it waits for ended cancelled" in after_deploy.error


@jobs.handler("tests.cleans-up")
def _cleans_up(ctx: jobs.JobContext) -> None:
    ctx.on_end(lambda: ctx.log("first registered, last run"))
    ctx.on_end(lambda: ctx.log("lock released"))
    raise RuntimeError("crashed after taking the lock")


@pytest.mark.django_db
def test_cleanups_run_last_first_even_when_the_handler_crashes() -> None:
    jobs.enqueue("tests.cleans-up")
    [done] = jobs.run_pending(kinds=["tests.cleans-up"])
    assert done.state == JobState.FAILED
    assert done.log.index("lock released") < done.log.index("first registered, last run")


@pytest.mark.django_db
def test_a_cancelled_delivery_says_so_on_its_row_instead_of_looking_pending() -> None:
    from onwatch.alerts.models import DeliveryState
    from onwatch.alerts.services import add_channel, deliver
    from onwatch.core.models import Organization

    org = Organization.objects.create(name="Acme")
    delivery = deliver(add_channel(org, "ops", "json://127.0.0.1:9/hook"), "Shop is down", "")
    assert delivery.job is not None
    jobs.cancel(delivery.job, "ana@example.com", may_stop_alerts=True)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.error) == (
        DeliveryState.FAILED,
        "cancelled by ana@example.com",
    )


@pytest.mark.django_db
def test_a_job_told_to_wait_for_one_that_already_failed_ends_cancelled_saying_why() -> None:
    failing = jobs.enqueue("tests.boom")
    [done] = jobs.run_pending(kinds=["tests.boom"])
    assert done.state == JobState.FAILED
    late = jobs.enqueue("tests.ok", after=failing)
    assert late.state == JobState.CANCELLED
    assert late.error == f"not started: job #{failing.pk} (tests.boom) it waits for ended failed"
    assert jobs.run_pending(kinds=["tests.ok"]) == []


@pytest.mark.django_db
def test_a_job_whose_cancel_was_asked_ends_interrupted_and_alerted_when_its_worker_dies() -> None:
    from datetime import timedelta

    from django.utils import timezone

    job = jobs.enqueue("tests.ok", max_attempts=3)
    waiter = jobs.enqueue("tests.ok", after=job)
    claimed = jobs.claim("dead-worker", ["tests.ok"])
    assert claimed is not None and claimed.pk == job.pk
    jobs.cancel(claimed, "ana@example.com")
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    [reaped] = jobs.reap_expired()
    assert (reaped.pk, reaped.state, reaped.attempts) == (job.pk, JobState.INTERRUPTED, 1)
    assert reaped.error.startswith("cancelled by ana@example.com, but the worker dead-worker")
    assert reaped.alerted
    waiter.refresh_from_db()
    assert waiter.state == JobState.CANCELLED
    assert jobs.run_pending(kinds=["tests.ok"]) == []


@pytest.mark.django_db
def test_a_kind_hears_when_its_job_is_interrupted_so_its_own_rows_stop_saying_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    heard: list[tuple[int, str, bool]] = []
    monkeypatch.setitem(
        jobs.ON_INTERRUPT, "tests.ok", lambda job: heard.append((job.pk, job.state, job.alerted))
    )
    jobs.enqueue("tests.ok")
    claimed = jobs.claim("dead-worker", ["tests.ok"])
    assert claimed is not None
    Job.objects.filter(pk=claimed.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    [reaped] = jobs.reap_expired()
    # Before the job's alert: the kind's rows say interrupted by the time anyone looks.
    assert heard == [(claimed.pk, JobState.INTERRUPTED, False)]
    assert reaped.alerted
