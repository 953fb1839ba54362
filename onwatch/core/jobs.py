"""Durable jobs: every unit of background work is a row that ends succeeded, failed,
interrupted or cancelled, with a log appended line by line (JobLogLine).

Each kind of job belongs to a named queue (declared with its handler), and every worker
runs each queue in slots of its own, so an alert delivery never waits behind a backup.
A worker claims a queued row (SKIP LOCKED on PostgreSQL, a conditional UPDATE on SQLite),
holds a lease it renews from a heartbeat thread, and records the outcome. A lease that
runs out means the worker died: `reap_expired` marks the job interrupted and alerts.
The heartbeat also sees a cancel and stops the handler's processes. A job may wait for
another (`after`): it starts once that one succeeded, and ends cancelled if it did not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from onwatch.core import audit, children, hooks, wakeup
from onwatch.core.models import ENDED, Job, JobLogLine, JobState, Organization

log = logging.getLogger("onwatch.jobs")


class JobFailed(Exception):
    """Raised by a handler for an expected failure: the message is the job's error text."""


class RetryLater(Exception):
    """Raised by a handler to be tried again after `delay` seconds (if attempts remain)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class WaitLater(Exception):
    """Raised by a handler that cannot begin yet, before it did any work: something it needs
    is held by another job. It goes back to the queue for `delay` seconds with no attempt
    counted, so its slot runs other jobs meanwhile (perhaps the very one it waits for)."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message)
        self.delay = delay


class JobCancelled(Exception):
    """Raised in a handler (by ctx.check) once someone cancelled its job."""


@dataclass
class JobContext:
    job: Job
    # Set when someone cancels the job: handlers that wait or loop check it; the processes
    # they started are stopped for them (see Heartbeat).
    cancelled: threading.Event = field(default_factory=threading.Event)
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    # Whether the cancel had reached the handler when it ended: only then is the cancel
    # what ended it. A failure of its own while a cancel was on its way stays a failure.
    stopped_by_cancel: bool = False

    def log(self, line: str) -> None:
        append_line(self.job.pk, f"{timezone.now().strftime('%H:%M:%S')} {line}")

    def progress(self, fraction: float) -> None:
        Job.objects.filter(pk=self.job.pk).update(progress=max(0.0, min(1.0, fraction)))

    def on_end(self, cleanup: Callable[[], object]) -> None:
        """Run `cleanup` when the handler ends, however it ends (cancelled, crashed):
        release a lock, drop a scratch database. Last registered runs first."""
        self.cleanups.append(cleanup)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled("cancelled")

    def wait(self, seconds: float) -> None:
        """Sleep, but end early with JobCancelled when the job is cancelled."""
        self.cancelled.wait(seconds)
        self.check()


# Names the advisory locks (two-key form, apart from audit's one-key lock) that keep one
# writer at a time on a job's log on PostgreSQL.
_PG_LOG_LOCK = 0x6C6F67


def _one_log_writer(job_id: int) -> None:
    """Inside a transaction: wait for any other open write to this job's log to commit.
    A page following the log reads the lines after the last id it saw, so the ids of a
    job's lines must become visible in their order. On PostgreSQL ids come from a
    sequence at insert time: a single line written while a batch of lines is still open
    would commit a higher id first, and the follower would move past the batch for good.
    Held until commit, the lock makes a later writer take its ids after the earlier one's
    commit. SQLite has one writer at a time already."""
    if connection.vendor == "postgresql":
        # Ids past 2**31 share a key with a lower one: that only makes them wait longer.
        key = job_id % 2**31
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_PG_LOG_LOCK, key])


def append_line(job_id: int, text: str) -> None:
    with transaction.atomic():
        _one_log_writer(job_id)
        JobLogLine.objects.create(job_id=job_id, text=text)


def append_lines(job_id: int, texts: list[str]) -> None:
    """Lines that came together, in one transaction: a program printing short lines fast
    (50,000 a MiB) would otherwise cost a round trip, and on SQLite a commit, each. One
    statement run for every line, not bulk_create: building a model instance and its SQL
    per line took the ORM some 100 µs a line, far longer than storing it."""
    if not texts:
        return
    at = JobLogLine._meta.get_field("at").get_db_prep_save(timezone.now(), connection)
    with transaction.atomic(), connection.cursor() as cursor:
        _one_log_writer(job_id)
        cursor.executemany(_log_insert(), [(job_id, at, text) for text in texts])


def _log_insert() -> str:
    """The INSERT of a log line, from the model's own table and column names."""
    quote, meta = connection.ops.quote_name, JobLogLine._meta
    column = {f.name: f.column or f.name for f in meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in ("job", "at", "text"))
    # Names only, all the model's and quoted; the values go as parameters.
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES (%s, %s, %s)"  # noqa: S608


CANCEL_POLL_SECONDS = 1.0
Handler = Callable[[JobContext], dict[str, Any] | None]
HANDLERS: dict[str, Handler] = {}
# alerts: deliveries, which mostly wait on the network; short: housekeeping of seconds;
# long: backups, drills, restores (later deploys), which may take hours; pipelines: the
# tests of the team's services, so a push is tested while a two-hour backup runs, and a
# pipeline never holds a backup back either; rollbacks: a watch's automatic rollback, as
# soon as it is asked for. Slots per queue are settings.JOB_QUEUES.
QUEUES = ("alerts", "short", "long", "pipelines", "rollbacks")
DEFAULT_QUEUE = "short"
QUEUE_OF: dict[str, str] = {}
# What a kind does when its job ends cancelled (a delivery or a restore whose own row would
# otherwise look pending for ever); called with the ended job.
CancelHook = Callable[[Job], object]
ON_CANCEL: dict[str, CancelHook] = {}
# What a kind does when the reaper ends its job interrupted (its worker died): the kind's
# own rows (a backup run, a drill) would otherwise say "running" for ever. Called with the
# ended job, before its alert; it records, it does not alert (the job's alert is the one).
ON_INTERRUPT: dict[str, CancelHook] = {}
# Kinds whose failure must not raise an alert through the alert system itself (a failing
# delivery is already visible in the delivery log; alerting on it would loop).
QUIET_KINDS: set[str] = set()
# What a job is, in words, for its failure alert ("Backup of nightly"): the reader needs the
# plan or repository it was for, not "backups.run #13".
Describe = Callable[[Job], str]
DESCRIBERS: dict[str, Describe] = {}


def when_cancelled(kind: str, hook: CancelHook) -> None:
    ON_CANCEL[kind] = hook


def when_interrupted(kind: str, hook: CancelHook) -> None:
    ON_INTERRUPT[kind] = hook


def handler(
    kind: str,
    quiet: bool = False,
    queue: str = DEFAULT_QUEUE,
    describe: Describe | None = None,
) -> Callable[[Handler], Handler]:
    if queue not in QUEUES:
        raise ValueError(f"job kind {kind!r}: queue {queue!r} is none of {', '.join(QUEUES)}")

    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        QUEUE_OF[kind] = queue
        if quiet:
            QUIET_KINDS.add(kind)
        if describe is not None:
            DESCRIBERS[kind] = describe
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
    job = Job.objects.create(
        kind=kind,
        queue=kwargs.pop("queue", QUEUE_OF.get(kind, DEFAULT_QUEUE)),
        payload=payload or {},
        org=org,
        max_attempts=max_attempts,
        run_after=timezone.now() + timedelta(seconds=delay),
        **kwargs,
    )
    after = Job.objects.filter(pk=job.after_id).first() if job.after_id else None
    if after is not None and after.state in ENDED and after.state != JobState.SUCCEEDED:
        # Its end released the waiters it had then, not this one: it would wait for ever.
        release_waiters(after)
        job.refresh_from_db()
    # Workers here start it at once, not at their next poll; only once it is committed,
    # or they would look before they can see it.
    transaction.on_commit(wakeup.poke, robust=True)
    return job


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
        due = Job.objects.filter(state=JobState.QUEUED, run_after__lte=now).filter(
            Q(after__isnull=True) | Q(after__state=JobState.SUCCEEDED)
        )
        if kinds is not None:
            due = due.filter(kind__in=kinds)
        if queues is not None:
            due = due.filter(queue__in=queues)
        due = due.order_by("run_after", "id")
        lease = now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        if connection.features.has_select_for_update_skip_locked:
            # Only the job rows: the one it waits for (an outer join) is read, not locked.
            candidate = due.select_for_update(skip_locked=True, of=("self",)).values_list(
                "id", flat=True
            )
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
    """While the handler runs: renews the job's lease every third of the lease time and
    looks for a cancel every second. Once cancelled, it tells the handler (ctx.cancelled)
    and stops every process the handler's thread started, each second until it ends."""

    def __init__(self, ctx: JobContext, worker: str) -> None:
        self.ctx = ctx
        self.job_id = ctx.job.pk
        self.worker = worker
        self.thread_id = threading.get_native_id()  # the handler's: it runs in this one
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"lease-{ctx.job.pk}")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def run(self) -> None:
        renewed = time.monotonic()
        try:
            while not self.stop.wait(CANCEL_POLL_SECONDS):
                try:
                    renewed = self.tick(renewed)
                except Exception as e:
                    # The database may be restarting: try again next second rather than
                    # leave the job without a lease or a way to be cancelled.
                    log.warning("job #%s: lease or cancel check failed: %s", self.job_id, e)
        finally:
            connection.close()

    def tick(self, renewed: float) -> float:
        if time.monotonic() - renewed >= settings.JOB_LEASE_SECONDS / 3:
            self.renew()
            renewed = time.monotonic()
        if self.ctx.cancelled.is_set() or self.cancel_asked():
            self.ctx.cancelled.set()
            # A short grace: the lease must not run out while we wait.
            children.stop(self.thread_id, grace=settings.JOB_LEASE_SECONDS / 4)
        return renewed

    def renew(self) -> None:
        lease = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        Job.objects.filter(pk=self.job_id, state=JobState.RUNNING, worker=self.worker).update(
            lease_until=lease
        )

    def cancel_asked(self) -> bool:
        return Job.objects.filter(pk=self.job_id).exclude(cancel_requested_by="").exists()


def backoff(attempt: int) -> float:
    return float(min(15 * 2 ** (attempt - 1), 3600))


@dataclass
class Outcome:
    state: str = JobState.SUCCEEDED
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    # RetryLater without a delay means "back off": a None delay must still retry.
    retry: bool = False
    retry_delay: float | None = None
    # WaitLater: back to the queue, not an attempt.
    wait: bool = False


def call_handler(ctx: JobContext, worker: str) -> Outcome:
    job = ctx.job
    fn = HANDLERS.get(job.kind)
    try:
        if fn is None:
            raise JobFailed(f"no handler for job kind {job.kind!r}; is onwatch up to date?")
        with Heartbeat(ctx, worker):
            try:
                return Outcome(result=fn(ctx) or {})
            finally:
                # Read before the heartbeat stops: it may still see the cancel in its
                # last second, after the handler has ended on its own.
                ctx.stopped_by_cancel = ctx.cancelled.is_set()
    except RetryLater as e:
        return Outcome(JobState.FAILED, str(e), retry=True, retry_delay=e.delay)
    except WaitLater as e:
        return Outcome(JobState.QUEUED, str(e), wait=True, retry_delay=e.delay)
    except (JobFailed, JobCancelled) as e:
        return Outcome(JobState.FAILED, str(e))
    except Exception as e:
        log.exception("job %s crashed", job)
        append_line(job.pk, traceback.format_exc())
        return Outcome(JobState.FAILED, f"{type(e).__name__}: {e}")


def run_cleanups(ctx: JobContext) -> None:
    for cleanup in reversed(ctx.cleanups):
        try:
            cleanup()
        except Exception as e:
            log.exception("cleanup of job %s failed", ctx.job)
            ctx.log(f"cleaning up failed: {type(e).__name__}: {e}")


def run(job: Job, worker: str) -> Job:
    """Run one claimed job to its end state and return it fresh from the database."""
    ctx = JobContext(job)
    outcome = call_handler(ctx, worker)
    run_cleanups(ctx)
    asked = Job.objects.filter(pk=job.pk).values_list("cancel_requested_by", flat=True).first()
    # Cancelled when the cancel reached the handler (its processes were stopped) before it
    # ended. A cancel still on its way neither hides a real failure (it alerts) nor takes
    # a finished job's success.
    if asked and (ctx.stopped_by_cancel or outcome.wait):
        # The handler's words stay: its clean-up may say what it left behind and how to
        # remove it ("cancelled by ana; … the database x is still there; drop it …").
        said = f"; {outcome.error}" if outcome.error not in ("", "cancelled") else ""
        said = "" if outcome.wait else said  # why it waited is no longer news
        outcome = Outcome(JobState.CANCELLED, f"cancelled by {asked}{said}")
    if outcome.wait and outcome.state == JobState.QUEUED:
        wait(job, worker, outcome)
    elif outcome.retry and job.attempts < job.max_attempts:
        requeue(job, worker, outcome)
    else:
        finish(job, worker, outcome)
    job.refresh_from_db()
    ended(job)
    return job


def requeue(job: Job, worker: str, outcome: Outcome) -> None:
    delay = backoff(job.attempts) if outcome.retry_delay is None else outcome.retry_delay
    append_line(job.pk, f"attempt {job.attempts} failed: {outcome.error}; trying again")
    Job.objects.filter(pk=job.pk, worker=worker, state=JobState.RUNNING).update(
        state=JobState.QUEUED,
        run_after=timezone.now() + timedelta(seconds=delay),
        error=outcome.error,
        lease_until=None,
        worker="",
    )


def wait(job: Job, worker: str, outcome: Outcome) -> None:
    """Back to the queue, not started: the log says why once, not at every look."""
    said = Job.objects.filter(pk=job.pk).values_list("error", flat=True).first()
    if said != outcome.error:
        append_line(job.pk, outcome.error)
    Job.objects.filter(pk=job.pk, worker=worker, state=JobState.RUNNING).update(
        state=JobState.QUEUED,
        run_after=timezone.now() + timedelta(seconds=outcome.retry_delay or 0),
        error=outcome.error,
        lease_until=None,
        worker="",
        started_at=None,
        attempts=F("attempts") - 1,
    )


def finish(job: Job, worker: str, outcome: Outcome) -> None:
    # Only while still ours and running: a job the reaper already marked interrupted
    # (this worker stalled past its lease) keeps that verdict and its alert.
    Job.objects.filter(pk=job.pk, worker=worker, state=JobState.RUNNING).update(
        state=outcome.state,
        error=outcome.error,
        result=outcome.result,
        finished_at=timezone.now(),
        lease_until=None,
        progress=1.0 if outcome.state == JobState.SUCCEEDED else F("progress"),
    )


def ended(job: Job) -> None:
    """What follows a job's end: its kind's own records if it was cancelled or
    interrupted, its alert if it failed, and the jobs waiting for it."""
    # Records first: the alert's link then leads to pages that already say how it ended.
    if job.state == JobState.CANCELLED:
        call_hook(ON_CANCEL, job, "cancel")
    if job.state == JobState.INTERRUPTED:
        call_hook(ON_INTERRUPT, job, "interruption")
    if job.state in (JobState.FAILED, JobState.INTERRUPTED):
        alert_job_failure(job)
    if job.state in ENDED and job.state != JobState.SUCCEEDED:
        release_waiters(job)


def call_hook(hooks_of: dict[str, CancelHook], job: Job, what: str) -> None:
    hook = hooks_of.get(job.kind)
    if hook is None:
        return
    try:
        hook(job)
    except Exception:
        # The alert and the waiting jobs matter more than the kind's own record of it.
        log.exception("job %s: recording its %s failed", job, what)


def release_waiters(job: Job) -> None:
    """Jobs waiting for one that did not succeed never start: they end cancelled, saying
    why (a deploy whose pipeline failed is not deployed), and so do their own waiters."""
    waiting = list(Job.objects.filter(after=job, state=JobState.QUEUED))
    for waiter in waiting:
        why = f"not started: job #{job.pk} ({job.kind}) it waits for ended {job.state}"
        if Job.objects.filter(pk=waiter.pk, state=JobState.QUEUED).update(
            state=JobState.CANCELLED, error=why, finished_at=timezone.now()
        ):
            append_line(waiter.pk, why)
            waiter.refresh_from_db()
            ended(waiter)


class NotCancellable(Exception):
    pass


class CancelForbidden(Exception):
    """The actor may cancel jobs but not this one (it sends alerts)."""


def sends_alerts(job: Job) -> bool:
    return job.queue == "alerts" or QUEUE_OF.get(job.kind) == "alerts"


def cancel(
    job: Job, actor: str, request: HttpRequest | None = None, may_stop_alerts: bool = False
) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop it (it ends
    cancelled within seconds, its processes stopped and its cleanups run). Audited.
    Raises NotCancellable for a job that has already ended, CancelForbidden for one that
    sends alerts unless `may_stop_alerts` (the actor may manage alert channels)."""
    if sends_alerts(job) and not may_stop_alerts:
        # Cancelled deliveries do not alert: whoever may only cancel jobs must not be able
        # to silence an outage notice.
        raise CancelForbidden(
            f"job #{job.pk} sends an alert; only someone who may manage alert channels "
            "can cancel it"
        )
    if Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED,
        cancel_requested_by=actor,
        error=f"cancelled by {actor}",
        finished_at=timezone.now(),
    ):
        append_line(job.pk, f"cancelled by {actor} before it started")
    elif Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested_by=actor):
        append_line(job.pk, f"{actor} cancelled the job; stopping it")
    else:
        job.refresh_from_db()
        raise NotCancellable(f"job #{job.pk} has already ended ({job.state}); nothing to cancel")
    audit.record("job-cancelled", request=request, actor=actor, org=job.org, target=str(job))
    job.refresh_from_db()
    if job.state == JobState.CANCELLED:
        ended(job)
    return job


def reap_expired() -> list[Job]:
    """Running jobs whose lease has run out lost their worker: queue them again if they
    have attempts left (a delivery, say), else mark them interrupted and alert."""
    now = timezone.now()
    reaped = []
    expired = Job.objects.filter(state=JobState.RUNNING, lease_until__lt=now)
    for job in expired:
        still = Job.objects.filter(pk=job.pk, state=JobState.RUNNING, lease_until__lt=now)
        if job.cancel_requested_by:
            # Someone asked it to stop: trying it again would run what they cancelled.
            # Interrupted, not cancelled, and alerted: see reap_cancelled.
            if reap_cancelled(job, still, now):
                reaped.append(job)
            continue
        if job.attempts < job.max_attempts:
            note = f"the worker {job.worker} stopped answering during attempt {job.attempts}"
            if still.update(
                state=JobState.QUEUED,
                run_after=now + timedelta(seconds=backoff(job.attempts)),
                lease_until=None,
                worker="",
                error=f"{note}; trying again",
            ):
                append_line(job.pk, f"{note}; trying again")
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
            ended(job)
            reaped.append(job)
    return reaped


def reap_cancelled(job: Job, still: QuerySet[Job], now: datetime) -> bool:
    """Its clean-up (a scratch database to drop, a lock to release) lived in the dead
    worker and cannot run here, so the job is not quietly cancelled: it ends interrupted
    and alerts, so that someone looks for what it may have left."""
    why = (
        f"cancelled by {job.cancel_requested_by}, but the worker {job.worker} stopped "
        "answering before the job ended, so its clean-up may not have run; look for what "
        "it leaves while it works (a scratch database, a lock, a half-written file)"
    )
    if not still.update(state=JobState.INTERRUPTED, finished_at=now, error=why, lease_until=None):
        return False
    append_line(job.pk, why)
    job.refresh_from_db()
    ended(job)
    return True


def alert_job_failure(job: Job) -> None:
    if job.kind in QUIET_KINDS or job.alerted:
        return
    if Job.objects.filter(pk=job.pk, alerted=False).update(alerted=True) != 1:
        return
    job.alerted = True
    verb = "was interrupted" if job.state == JobState.INTERRUPTED else "failed"
    hooks.alert(
        org=job.org,
        title=f"{describe_job(job)} {verb}",
        body=failure_text(job),
        link=reverse("job_detail", args=[job.pk]),
    )


def describe_job(job: Job) -> str:
    fallback = f"Background job {job.kind} #{job.pk}"
    describe = DESCRIBERS.get(job.kind)
    try:
        return describe(job) if describe else fallback
    except Exception:
        # The alert matters more than its title: a describer that fails (its plan was
        # removed meanwhile, the database hiccupped) must not stop it.
        log.exception("could not describe job %s", job.pk)
        return fallback


def failure_text(job: Job) -> str:
    since = job.started_at or job.created_at
    return "\n".join(
        [
            f"What is wrong: {job.error or 'the job stopped without saying why'}",
            f"Since: {since:%Y-%m-%d %H:%M} UTC",
            "What to do: read the job's log on its page (it shows each step up to the "
            "failure), fix the cause, and run it again.",
        ]
    )


def forget(job_ids: list[int]) -> int:
    """Remove these jobs with their logs once they have ended (their owner, say a deleted
    service, takes its history with it); one still running stays, for its worker to end.
    Returns how many went."""
    gone = Job.objects.filter(id__in=job_ids, state__in=ENDED).delete()[1]
    return gone.get(Job._meta.label, 0)


def age_out_logs(now: datetime, days: int) -> int:
    """Remove the log lines of jobs that ended more than `days` ago (a nightly backup
    writes dozens, a delivery a few, every day); the job keeps its state, error and
    result, and its log says where the lines went. Returns the jobs whose lines went."""
    old = Job.objects.filter(finished_at__lt=now - timedelta(days=days))
    with transaction.atomic():
        ids = list(old.filter(log_lines__isnull=False).distinct().values_list("id", flat=True))
        note = f"(the log of this job was removed {days} days after it ended)"
        Job.objects.filter(id__in=ids).update(old_log=note)
        JobLogLine.objects.filter(job_id__in=ids).delete()
    return len(ids)


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
