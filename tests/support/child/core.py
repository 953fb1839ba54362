"""Child-process functions on onwatch's own tables (see tests.support.child)."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management import call_command
from django.db.models import Max, Min

from onwatch.alerts.models import Delivery
from onwatch.core import jobs
from onwatch.core.models import Job, JobLogLine, JobState, Organization
from tests.support.child import wait_until


def migrate_back(app: str, to: str) -> None:
    """As before an upgrade: `app` migrated back to migration `to`."""
    call_command("migrate", app, to, verbosity=0)


def start_up() -> None:
    """Nothing beyond the start-up every call makes: with migrate=True, a database that
    onwatch's processes can use."""


def enqueue(kind: str, payload: dict[str, Any], times: int = 1, org_name: str = "") -> None:
    """`times` jobs queued the way onwatch queues them, for the organization named if
    any; their ids as JSON."""
    org = Organization.objects.get_or_create(name=org_name)[0] if org_name else None
    print(json.dumps([jobs.enqueue(kind, payload, org=org).pk for _ in range(times)]))


def run_short_jobs(n: int) -> None:
    """n jobs of a hundredth of a second made at once, bypassing enqueue as a burst of
    work would; once every one succeeded, what each run recorded, as JSON."""
    Job.objects.bulk_create(Job(kind="core.sleep", payload={"seconds": 0.01}) for _ in range(n))
    wait_until(lambda: not Job.objects.exclude(state=JobState.SUCCEEDED).exists())
    ran = [
        {"attempts": j.attempts, "log": j.log, "worker": j.worker, "result": j.result}
        for j in Job.objects.all()
    ]
    print(json.dumps(ran))


def print_log_line(job_id: int, text: str) -> None:
    """The first line of the job's log that contains `text`, once it has been written."""
    lines = JobLogLine.objects.filter(job_id=job_id, text__contains=text).order_by("id")
    line = wait_until(lines.first)
    assert line is not None  # wait_until returns only once there is one
    print(line.text)


def wait_for_running(ids: list[int], n: int) -> None:
    """Until exactly n of these jobs run at once."""
    running = Job.objects.filter(pk__in=ids, state=JobState.RUNNING)
    wait_until(lambda: running.count() == n)


def print_states(ids: list[int]) -> None:
    """The jobs' states in the order of their ids, as JSON."""
    jobs_ = Job.objects.filter(pk__in=ids).order_by("pk")
    print(json.dumps(list(jobs_.values_list("state", flat=True))))


def print_once_alerted(job_id: int) -> None:
    """Once an alert names the job: its state, error and alerted flag, and every alert's
    title and channel, as JSON."""
    named = Delivery.objects.filter(title__contains=f"#{job_id} ")
    wait_until(named.exists)
    job = Job.objects.get(pk=job_id)
    titles = list(Delivery.objects.values_list("title", "channel_name"))
    print(json.dumps([job.state, job.error, job.alerted, titles]))


def print_once_stopped(job_id: int, asked: str) -> None:
    """Once the job no longer runs: its state, error, log and alerted flag, and the
    seconds from the log line that contains `asked` to the job's end, as JSON."""
    wait_until(lambda: Job.objects.get(pk=job_id).state != JobState.RUNNING)
    job = Job.objects.get(pk=job_id)
    line = job.log_lines.filter(text__contains=asked).order_by("id").first()
    assert line is not None and job.finished_at is not None, (line, job.finished_at)
    took = (job.finished_at - line.at).total_seconds()
    print(json.dumps([job.state, job.error, job.log, job.alerted, took]))


def print_run_span(ids: list[int], timeout: float) -> None:
    """Once these jobs all succeeded: the seconds from the first one's start to the last
    one's end."""
    done = Job.objects.filter(pk__in=ids, state=JobState.SUCCEEDED)
    wait_until(lambda: done.count() == len(ids), timeout)
    span = done.aggregate(first=Min("started_at"), last=Max("finished_at"))
    print((span["last"] - span["first"]).total_seconds())


def append_job_line(job: int, line: str) -> None:
    """As a running job logs: one line appended to its log."""
    jobs.append_line(job, line)


def mark_job_cancelled(job: int) -> None:
    """As the worker does once it has stopped a cancelled job."""
    Job.objects.filter(pk=job).update(state=JobState.CANCELLED)


def run_pending_job(kind: str) -> None:
    """As a worker would: run the one queued job of `kind`, which must succeed."""
    [job] = jobs.run_pending(kinds=[kind])
    assert job.state == JobState.SUCCEEDED, job.error


def print_owner_link_and_what_it_imported() -> None:
    """The owner's link `onwatch up` prints, and whether making it imported the whole
    URLconf or the API, as JSON."""
    from onwatch.cli import owner_link

    link = owner_link()
    print(json.dumps([link, [m for m in ("onwatch.urls", "onwatch.api") if m in sys.modules]]))


def print_queue_waits(ids: list[int], timeout: float) -> None:
    """Once these jobs all succeeded: the seconds each waited from being queued to its
    start, as JSON."""
    done = Job.objects.filter(pk__in=ids, state=JobState.SUCCEEDED)
    wait_until(lambda: done.count() == len(ids), timeout)
    waits = [(j.started_at - j.created_at).total_seconds() for j in done if j.started_at]
    print(json.dumps(waits))
