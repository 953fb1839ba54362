"""A cancel on its way does not turn a real failure into a cancel: a backup or a drill is
cancelled only when the cancel is what stopped it. Real restic and SQLite; the worker's
heartbeat is kept from seeing the cancel, as it is for up to a second in real life."""

from __future__ import annotations

from pathlib import Path

import pytest

from onwatch.backups import services
from onwatch.backups.models import BackupRun, Drill, Outcome, Plan, SourceKind
from onwatch.core import jobs
from onwatch.core.models import Job, JobState, Organization
from tests.support.backups import (
    assert_failed_with_alert,
    channel,
    damage_data_packs,
    local_repo,
    plan_for,
    sqlite_file,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel")]
__all__ = ["channel"]


def sqlite_plan(org: Organization, tmp_path: Path) -> Plan:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    return plan_for(source, [local_repo(org, tmp_path / "repo")])


def run_with_cancel_on_its_way(kind: str, plan: Plan, monkeypatch: pytest.MonkeyPatch) -> Job:
    """Claim a `kind` job for `plan`, have ana cancel it, and run it before its heartbeat
    looks for the cancel: whatever ends it, the cancel did not."""
    queued = jobs.enqueue(kind, {"plan": plan.pk}, org=plan.org)
    job = jobs.claim("test-worker", [kind])
    assert job is not None and job.pk == queued.pk
    jobs.cancel(job, "ana@example.com")
    monkeypatch.setattr(jobs, "CANCEL_POLL_SECONDS", 3600.0)
    return jobs.run(job, "test-worker")


def test_a_drill_that_fails_for_real_while_a_cancel_is_on_its_way_fails_and_alerts(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = sqlite_plan(org, tmp_path)
    jobs.enqueue("backups.run", {"plan": plan.pk}, org=org)
    [backed_up] = jobs.run_pending(kinds=["backups.run"])
    assert backed_up.state == JobState.SUCCEEDED, backed_up.error + backed_up.log
    repository = plan.copies.get()
    [copy] = services.verified_copies(plan, repository)
    damage_data_packs(tmp_path / "repo")
    job = run_with_cancel_on_its_way("backups.drill", plan, monkeypatch)
    assert_failed_with_alert(job, "Restore drill of nightly failed")
    drill = Drill.objects.get(job=job)
    assert drill.state == Outcome.FAILED and "cancelled" not in drill.error, drill.error
    # The snapshot it could not bring back is no longer offered to restores.
    assert copy.snapshot_id and services.verified_copies(plan, repository) == []


def test_a_backup_that_fails_for_real_while_a_cancel_is_on_its_way_fails_and_alerts(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = sqlite_plan(org, tmp_path)
    Path(plan.source.path).unlink()
    job = run_with_cancel_on_its_way("backups.run", plan, monkeypatch)
    assert_failed_with_alert(job, "Backup of nightly failed")
    run = BackupRun.objects.get(job=job)
    assert run.state == Outcome.FAILED and "cancelled" not in run.error, run.error
