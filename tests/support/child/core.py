"""Child-process functions on onwatch's own tables (see tests.support.child)."""

from __future__ import annotations

import json
import sys

from django.core.management import call_command

from onwatch.core import jobs
from onwatch.core.models import Job, JobState


def migrate_back(app: str, to: str) -> None:
    """As before an upgrade: `app` migrated back to migration `to`."""
    call_command("migrate", app, to, verbosity=0)


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
