"""Durable jobs: every unit of background work is a row that ends succeeded, failed or
interrupted.

Each kind of job belongs to a named queue (declared with its handler), and every worker
runs each queue in slots of its own, so an alert delivery never waits behind a backup.
A worker claims a queued row (SKIP LOCKED on PostgreSQL, a conditional UPDATE on SQLite),
holds a lease it renews from a heartbeat thread, and records the outcome. A lease that
runs out means the worker died: `reap_expired` marks the job interrupted and alerts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from onwatch.core.models import Job, JobState, Organization

log = logging.getLogger("onwatch.jobs")


class JobFailed(Exception):
    """Raised by a handler for an expected failure: the message is the job's error text."""


class RetryLater(Exception):
    """Raised by a handler to be tried again after `delay` seconds (if attempts remain)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class JobContext:
    job: Job
    lines: list[str]

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {line}")
        Job.objects.filter(pk=self.job.pk).update(log="\n".join(self.lines))

    def progress(self, fraction: float) -> None:
        Job.objects.filter(pk=self.job.pk).update(progress=max(0.0, min(1.0, fraction)))


Handler = Callable[[JobContext], dict[str, Any] | None]
HANDLERS: dict[str, Handler] = {}
# alerts: deliveries, which mostly wait on the network; short: housekeeping of seconds;
# long: backups, drills, restores (later pipelines, deploys), which may take hours.
# Slots per queue are settings.JOB_QUEUES.
QUEUES = ("alerts", "short", "long")
DEFAULT_QUEUE = "short"
QUEUE_OF: dict[str, str] = {}
# Kinds whose failure must not raise an alert through the alert system itself (a failing
# delivery is already visible in the delivery log; alerting on it would loop).
QUIET_KINDS: set[str] = set()


def handler(
    kind: str, quiet: bool = False, queue: str = DEFAULT_QUEUE
) -> Callable[[Handler], Handler]:
    if queue not in QUEUES:
        raise ValueError(f"job kind {kind!r}: queue {queue!r} is none of {', '.join(QUEUES)}")

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        QUEUE_OF[kind] = queue
        if quiet:
            QUIET_KINDS.add(kind)
        return fn

    return register


def enqueue(
    kind: str,
    payload: dict[str, Any] | None = None,
    org: Organization | None = None,
    max_attempts: int = 1,
    delay: float = 0,
    **kwargs: Any,
) -> Job:
    return Job.objects.create(
        kind=kind,
        queue=kwargs.pop("queue", QUEUE_OF.get(kind, DEFAULT_QUEUE)),
        payload=payload or {},
        org=org,
        max_attempts=max_attempts,
        run_after=timezone.now() + timedelta(seconds=delay),
        **kwargs,
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"


def claim(
    worker: str, kinds: list[str] | None = None, queues: list[str] | None = None
) -> Job | None:
    """Take the oldest due job (of these kinds, in these queues), or None. Safe with any
    number of concurrent workers."""
    with transaction.atomic():
        # Read the clock inside the transaction: on SQLite, BEGIN IMMEDIATE may have waited
        # for another writer, and a lease counted from before the wait would be short.
        now = timezone.now()
        due = Job.objects.filter(state=JobState.QUEUED, run_after__lte=now)
        if kinds is not None:
            due = due.filter(kind__in=kinds)
        if queues is not None:
            due = due.filter(queue__in=queues)
        due = due.order_by("run_after", "id")
        lease = now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        if connection.features.has_select_for_update_skip_locked:
            candidate = due.select_for_update(skip_locked=True).values_list("id", flat=True)
        else:
            candidate = due.values_list("id", flat=True)
        job_id = candidate.first()
        if job_id is None:
            return None
        # The state condition makes the claim safe where SKIP LOCKED does not exist: on
        # SQLite the IMMEDIATE transaction serialises writers and a second claimer finds
        # the row already running.
        claimed = Job.objects.filter(id=job_id, state=JobState.QUEUED).update(
            state=JobState.RUNNING,
            worker=worker,
            lease_until=lease,
            started_at=now,
            finished_at=None,
            attempts=F("attempts") + 1,
        )
    if claimed != 1:
        return None
    return Job.objects.get(id=job_id)


class Heartbeat:
    """Renews a job's lease every third of the lease time while the handler runs."""

    def __init__(self, job: Job, worker: str) -> None:
        self.job_id = job.pk
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"lease-{job.pk}")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def run(self) -> None:
        interval = settings.JOB_LEASE_SECONDS / 3
        try:
            while not self.stop.wait(interval):
                Job.objects.filter(
                    pk=self.job_id, state=JobState.RUNNING, worker=self.worker
                ).update(lease_until=timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS))
        finally:
            connection.close()


def backoff(attempt: int) -> float:
    return float(min(15 * 2 ** (attempt - 1), 3600))


def run(job: Job, worker: str) -> Job:
    """Run one claimed job to its end state and return it fresh from the database."""
    ctx = JobContext(job, job.log.splitlines() if job.log else [])
    fn = HANDLERS.get(job.kind)
    state, error, result, retry_delay = JobState.SUCCEEDED, "", {}, None
    # RetryLater without a delay means "back off": a None delay must still retry.
    retry = False
    try:
        if fn is None:
            raise JobFailed(f"no handler for job kind {job.kind!r}; is onwatch up to date?")
        with Heartbeat(job, worker):
            result = fn(ctx) or {}
    except RetryLater as e:
        state, error, retry, retry_delay = JobState.FAILED, str(e), True, e.delay
    except JobFailed as e:
        state, error = JobState.FAILED, str(e)
    except Exception as e:
        log.exception("job %s crashed", job)
        state, error = JobState.FAILED, f"{type(e).__name__}: {e}"
        ctx.lines.append(traceback.format_exc())
    if state == JobState.FAILED and retry and job.attempts < job.max_attempts:
        if retry_delay is None:
            retry_delay = backoff(job.attempts)
        ctx.lines.append(f"attempt {job.attempts} failed: {error}; trying again")
        Job.objects.filter(pk=job.pk, worker=worker, state=JobState.RUNNING).update(
            state=JobState.QUEUED,
            run_after=timezone.now() + timedelta(seconds=retry_delay),
            error=error,
            log="\n".join(ctx.lines),
            lease_until=None,
            worker="",
        )
    else:
        # Only while still ours and running: a job the reaper already marked interrupted
        # (this worker stalled past its lease) keeps that verdict and its alert.
        Job.objects.filter(pk=job.pk, worker=worker, state=JobState.RUNNING).update(
            state=state,
            error=error,
            result=result,
            log="\n".join(ctx.lines),
            finished_at=timezone.now(),
            lease_until=None,
            progress=1.0 if state == JobState.SUCCEEDED else F("progress"),
        )
    job.refresh_from_db()
    if job.state in (JobState.FAILED, JobState.INTERRUPTED):
        alert_job_failure(job)
    return job


def reap_expired() -> list[Job]:
    """Running jobs whose lease has run out lost their worker: queue them again if they
    have attempts left (a delivery, say), else mark them interrupted and alert."""
    now = timezone.now()
    reaped = []
    expired = Job.objects.filter(state=JobState.RUNNING, lease_until__lt=now)
    for job in expired:
        still = Job.objects.filter(pk=job.pk, state=JobState.RUNNING, lease_until__lt=now)
        if job.attempts < job.max_attempts:
            note = f"the worker {job.worker} stopped answering during attempt {job.attempts}"
            if still.update(
                state=JobState.QUEUED,
                run_after=now + timedelta(seconds=backoff(job.attempts)),
                lease_until=None,
                worker="",
                error=f"{note}; trying again",
                log=f"{job.log}\n{note}; trying again".lstrip("\n"),
            ):
                log.warning("job %s requeued: worker %s is gone", job, job.worker)
                job.refresh_from_db()
                reaped.append(job)
            continue
        n = still.update(
            state=JobState.INTERRUPTED,
            finished_at=now,
            error=f"the worker {job.worker} stopped answering; the job did not finish",
            lease_until=None,
        )
        if n == 1:
            job.refresh_from_db()
            log.warning("job %s interrupted: worker %s is gone", job, job.worker)
            alert_job_failure(job)
            reaped.append(job)
    return reaped


def alert_job_failure(job: Job) -> None:
    if job.kind in QUIET_KINDS or job.alerted:
        return
    # Imported here: alerts imports core, not the other way round at module load.
    from onwatch.alerts.services import raise_alert

    if Job.objects.filter(pk=job.pk, alerted=False).update(alerted=True) != 1:
        return
    job.alerted = True
    verb = "was interrupted" if job.state == JobState.INTERRUPTED else "failed"
    raise_alert(
        org=job.org,
        title=f"Background job {job.kind} #{job.pk} {verb}",
        body=job.error or "no error text",
    )


def work_once(worker: str, kinds: list[str] | None = None) -> Job | None:
    job = claim(worker, kinds)
    if job is None:
        return None
    return run(job, worker)


def run_pending(kinds: list[str] | None = None, limit: int = 100) -> list[Job]:
    """Run due jobs in this process until none are left (tests and `onwatch notify test`)."""
    done = []
    worker = worker_name()
    for _ in range(limit):
        job = work_once(worker, kinds)
        if job is None:
            break
        done.append(job)
    return done
