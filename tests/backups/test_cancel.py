"""Cancelling a restore drill or a restore while restic runs: its processes stop, its
scratch database is dropped, and what its clean-up said stays where people look (real
PostgreSQL, SQLite and restic; restic made slow where it restores)."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest
from django.db import connection

from onwatch.backups import restore_requests, restores, services
from onwatch.backups.models import Drill, Outcome, Plan, Restore, SourceKind
from onwatch.backups.summary import row
from onwatch.backups.views import rto_chart
from onwatch.core import jobs
from onwatch.core.models import Job, JobLogLine, JobState, Organization
from tests.support.backups import (
    PgSource,
    alerts_titled,
    channel,
    local_repo,
    pg_db,
    pg_source,
    plan_for,
    scratch_databases,
    sqlite_file,
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
    jobs.enqueue("backups.drill", {"plan": plan.pk}, org=org)
    [proved] = jobs.run_pending(kinds=["backups.drill"])
    assert proved.state == JobState.SUCCEEDED, proved.error + proved.log
    proof = Drill.objects.get(job=proved)
    chart_before = rto_chart(plan, list(plan.drills.all()))
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
    # Only this drill's, by the name its log gave: a drill of another test on the same
    # server may come and go meanwhile (a before/after difference counted it once).
    [made] = re.findall(r"created scratch database (onwatch_drill_[0-9a-f]+)", job.log)
    assert made not in scratch_databases(), f"the scratch database was left behind: {job.log}"
    lines = list(JobLogLine.objects.filter(job=job).values_list("text", flat=True))
    assert any("dropped scratch database" in line or "discard" in line for line in lines), lines
    drill = Drill.objects.get(job=job)
    assert drill.state == Outcome.CANCELLED and not drill.verified
    assert drill.error.startswith("cancelled by ana@example.com; "), drill.error
    assert Job.objects.filter(kind="backups.drill", state=JobState.RUNNING).count() == 0
    # A cancel says nothing about the data: the earlier proof stands, no failure is shown,
    # and the chart has no dot for it.
    overview = row(plan)
    assert overview.last_proven == proof and overview.last_drill == proof
    assert overview.problems == ["no offsite copy"], overview.problems
    assert rto_chart(plan, list(plan.drills.all())) == chart_before


def sqlite_plan(org: Organization, tmp_path: Path) -> Plan:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    jobs.enqueue("backups.run", {"plan": plan.pk}, org=org)
    [backed_up] = jobs.run_pending(kinds=["backups.run"])
    assert backed_up.state == JobState.SUCCEEDED, backed_up.error + backed_up.log
    return plan


def cancelled_restore(
    plan: Plan, into: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Job, Restore]:
    """A restore of `plan` into `into`, cancelled by ana while restic fetches the file."""
    chosen = restores.choose(plan)
    target = restore_requests.Target(path=str(into))
    asked = services.request_restore(
        plan, chosen.repository, chosen.snapshot.id, target, services.Actor("ana@example.com")
    )
    restic = slow_restic(tmp_path)
    monkeypatch.setenv("ONWATCH_RESTIC", str(restic))
    job = jobs.claim("test-worker", ["backups.restore"])
    assert job is not None and asked.job is not None and job.pk == asked.job.pk
    worker = threading.Thread(target=run_and_close, args=(job,))
    worker.start()
    wait_until(Path(f"{restic}.pid").exists, timeout=60, what="the restore reaching restic")
    jobs.cancel(job, "ana@example.com")
    worker.join(timeout=30)
    assert not worker.is_alive(), "the restore did not end after the cancel"
    job.refresh_from_db()
    asked.refresh_from_db()
    return job, asked


def test_a_cancelled_restore_keeps_what_its_clean_up_said(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = sqlite_plan(org, tmp_path)
    into = tmp_path / "restored.sqlite3"
    job, restore = cancelled_restore(plan, into, tmp_path, monkeypatch)
    assert job.state == JobState.CANCELLED and not job.alerted
    assert job.error.startswith("cancelled by ana@example.com; "), job.error
    assert f"nothing is left behind: onwatch removed the half-written file {into}" in job.error
    assert restore.state == Outcome.CANCELLED and not restore.left_behind
    assert restore.error.startswith("cancelled by ana@example.com; "), restore.error
    assert f"onwatch removed the half-written file {into}" in restore.error
    assert not into.exists() and not alerts_titled("left something behind")


def test_a_cancelled_restore_that_left_its_target_says_how_to_remove_it_and_alerts(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = sqlite_plan(org, tmp_path)
    # An empty directory passes the "new place" check, and then cannot be unlinked as a
    # file: the clean-up fails for real.
    into = tmp_path / "restored.sqlite3"
    into.mkdir()
    job, restore = cancelled_restore(plan, into, tmp_path, monkeypatch)
    assert job.state == JobState.CANCELLED
    left = f"the half-written file {into} is still there"
    assert job.error.startswith("cancelled by ana@example.com; ") and left in job.error
    assert f"delete it with rm {into}" in job.error
    assert restore.state == Outcome.CANCELLED and restore.left_behind
    assert left in restore.error and f"delete it with rm {into}" in restore.error
    [alert] = alerts_titled(f"A cancelled restore of {plan.name} left something behind")
    assert left in alert.body


def test_a_restore_that_succeeded_stays_succeeded_when_a_cancel_comes_in_its_last_second(
    org: Organization, tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    chosen = restores.choose(plan)
    target = restore_requests.Target(path=str(tmp_path / "restored.sqlite3"))
    services.request_restore(
        plan, chosen.repository, chosen.snapshot.id, target, services.Actor("ana")
    )
    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    # What run() records when the heartbeat saw the cancel as the handler returned.
    Job.objects.filter(pk=job.pk).update(
        state=JobState.CANCELLED, cancel_requested_by="ana", error="cancelled by ana"
    )
    job.refresh_from_db()
    jobs.ended(job)
    restore = Restore.objects.get(job=job)
    assert (restore.state, restore.error) == (Outcome.SUCCEEDED, "")
