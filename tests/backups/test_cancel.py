"""Cancelling a restore drill while restic runs: its processes stop and its scratch
database is dropped (real PostgreSQL and restic; restic made slow where it restores)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from django.db import connection

from onwatch.backups.models import Drill, Outcome
from onwatch.core import jobs
from onwatch.core.models import Job, JobLogLine, JobState, Organization
from tests.support.backups import (
    PgSource,
    channel,
    local_repo,
    pg_db,
    pg_source,
    plan_for,
    scratch_databases,
)
from tests.support.procs import alive
from tests.support.receivers import wait_until

# The job's thread reads what this test's thread wrote: real commits, not one transaction.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel")]
__all__ = ["channel", "pg_db"]


def slow_restic(tmp_path: Path) -> Path:
    """restic, except that `dump` and `restore` first wait ten minutes (the pid in a file)."""
    real = shutil.which("restic")
    assert real, "restic is not installed"
    script = tmp_path / "restic-slow"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *dump*|*restore*) echo $$ > "$0.pid"; sleep 600;; esac\n'
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    return script


def run_and_close(job: Job) -> None:
    """What a worker's slot does: run the job, then let go of the thread's connection."""
    try:
        jobs.run(job, "test-worker")
    finally:
        connection.close()


def test_a_cancelled_drill_stops_restic_and_drops_its_scratch_database(
    org: Organization, pg_db: PgSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_for(pg_source(org, pg_db), [local_repo(org, tmp_path / "repo")])
    jobs.enqueue("backups.run", {"plan": plan.pk}, org=org)
    [backed_up] = jobs.run_pending(kinds=["backups.run"])
    assert backed_up.state == JobState.SUCCEEDED, backed_up.error + backed_up.log
    before = scratch_databases()
    restic = slow_restic(tmp_path)
    monkeypatch.setenv("ONWATCH_RESTIC", str(restic))
    queued = jobs.enqueue("backups.drill", {"plan": plan.pk}, org=org)
    job = jobs.claim("test-worker", ["backups.drill"])
    assert job is not None and job.pk == queued.pk
    worker = threading.Thread(target=run_and_close, args=(job,))
    worker.start()
    pid_file = Path(f"{restic}.pid")
    wait_until(pid_file.exists, timeout=60, what="the drill reaching restic")
    stuck = int(pid_file.read_text())
    assert alive(stuck) and scratch_databases() - before, "no scratch database while restoring"
    jobs.cancel(job, "ana@example.com")
    worker.join(timeout=30)
    assert not worker.is_alive(), "the drill did not end after the cancel"
    job.refresh_from_db()
    assert (job.state, job.error) == (JobState.CANCELLED, "cancelled by ana@example.com")
    assert not job.alerted
    assert not alive(stuck), "restic outlived the cancel"
    assert scratch_databases() == before, f"the scratch database was left behind: {job.log}"
    lines = list(JobLogLine.objects.filter(job=job).values_list("text", flat=True))
    assert any("dropped scratch database" in line or "discard" in line for line in lines), lines
    drill = Drill.objects.get(job=job)
    assert drill.state == Outcome.FAILED and not drill.verified
    assert Job.objects.filter(kind="backups.drill", state=JobState.RUNNING).count() == 0
