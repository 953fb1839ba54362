"""The backup before migrations: a deploy whose release has a release command, of a service
that names a backup plan, backs the plan up first (real restic, a real directory source),
through the backups app's job, and links the snapshot to the release. Deploys and backups
run on onwatch's real worker, each in the slots of its own queue."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from onwatch.backups import restic
from onwatch.backups import services as backup_services
from onwatch.backups.models import BackupRun, Plan, SourceKind
from onwatch.core import jobs, loops
from onwatch.core.audit import CLI, SYSTEM
from onwatch.core.models import AuditEntry, Job, JobLogLine, JobState, Organization
from onwatch.deploys import releases, services
from onwatch.deploys.models import Deploy, ReleaseState, Service, State
from onwatch.deploys.switch import Machine
from tests.support.backups import alerts_titled, directory, local_repo, plan_for
from tests.support.deploys import beside_a_writer, commit
from tests.support.fixtures import signed_in
from tests.support.load import fetch
from tests.support.receivers import wait_until
from tests.support.releases import RELEASE_OK, app_files
from tests.support.switching import listen_port

pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
]


@pytest.fixture
def plan(org: Organization, tmp_path: Path) -> Plan:
    """A plan backing up a folder of files to a local restic repository."""
    source = backup_services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "uploads"))
    )
    return plan_for(source, [local_repo(org, tmp_path / "restic")])


def name_plan(service: Service, plan: Plan | None) -> None:
    fields = services.ServiceFields(
        name=service.name,
        git_url=service.git_url,
        branch=service.branch,
        backup_plan_id=plan.pk if plan else None,
    )
    services.change_service(service, fields, SYSTEM)
    service.refresh_from_db()


@contextmanager
def real_worker() -> Iterator[None]:
    stopper = loops.Stopper()
    worker = threading.Thread(target=loops.run_worker, args=(stopper,))
    worker.start()
    try:
        yield
    finally:
        stopper.halt()
        worker.join(timeout=120)


def ended(deploy: Deploy) -> bool:
    found = beside_a_writer(lambda: Deploy.objects.get(pk=deploy.pk))
    return found.state not in (State.QUEUED, State.RUNNING)


def deploy_now(service: Service, skip_backup: bool = False) -> Deploy:
    """Deploy the branch's newest commit on the real worker, to its end."""
    deploy = services.queue_deploy(service, CLI, "cli", skip_backup=skip_backup)
    with real_worker():
        wait_until(lambda: ended(deploy), 240, "the deploy")
    deploy.refresh_from_db()
    return deploy


def push(repo: Path, version: str, **files: str) -> None:
    commit(repo, app_files(version, **files), f"Version {version}")


def answers(machine: Machine) -> set[str]:
    return {fetch(listen_port(machine), "shop.test")[1] for _ in range(5)}


def backup_jobs() -> list[Job]:
    return list(Job.objects.filter(kind="backups.run").order_by("pk"))


def log_text(job_id: int | None) -> str:
    assert job_id is not None
    lines = JobLogLine.objects.filter(job_id=job_id).values_list("text", flat=True)
    return "\n".join(beside_a_writer(lambda: list(lines)))


def names(deploy: Deploy) -> list[str]:
    return [s["name"] for s in deploy.steps]


def test_a_deploy_with_migrations_backs_up_first_links_the_snapshot_and_a_rollback_does_not(
    machine: Machine, shop: Service, plan: Plan, tmp_path: Path, members: dict[str, object]
) -> None:
    first = deploy_now(shop)
    assert first.state == State.SUCCEEDED and backup_jobs() == []  # no plan named yet
    name_plan(shop, plan)
    push(tmp_path / "repo", "v2")
    deploy = deploy_now(shop)
    assert deploy.state == State.SUCCEEDED, (deploy.reason, deploy.steps)
    assert names(deploy)[:5] == ["checkout", "read onwatch.toml", "build", "backup",
                                 "release command"]  # fmt: skip
    backup, migrate = deploy.steps[3], deploy.steps[4]
    assert backup["ok"] and backup["ended"] <= migrate["started"]
    [job] = backup_jobs()
    assert job.state == JobState.SUCCEEDED
    run = BackupRun.objects.get(job=job)
    [copy] = run.copies.all()
    assert copy.good and copy.snapshot_id
    # The snapshot is in the repository, as restic itself lists it.
    listed = restic.snapshots(backup_services.repo_of(copy.repository))
    assert [s.short_id for s in listed] == [copy.snapshot_id[:8]]
    release = deploy.release
    assert release is not None
    assert (release.backup_snapshot, release.backed_up_at) == (copy.snapshot_id, run.finished_at)
    assert run.finished_at is not None and run.finished_at.isoformat() <= migrate["started"]
    said = f"backed up before its migrations: snapshot {copy.snapshot_id[:8]} at "
    assert backup["detail"].startswith(said)
    page = signed_in(members["viewer"]).get(f"/deploys/{deploy.pk}/").content.decode()
    assert release.backup_text in page and said in page
    assert AuditEntry.objects.filter(action="backups-run-started", target=plan.name).exists()
    assert answers(machine) == {"v2"}

    rollback = services.queue_rollback(shop, SYSTEM, "cli")
    with real_worker():
        wait_until(lambda: ended(rollback), 240, "the rollback")
    rollback.refresh_from_db()
    assert rollback.state == State.SUCCEEDED, rollback.reason
    assert "backup" not in names(rollback) and len(backup_jobs()) == 1
    assert answers(machine) == {"v1"}


def test_a_failed_backup_stops_the_deploy_before_its_migrations_and_skipping_it_is_audited(
    machine: Machine, shop: Service, plan: Plan, tmp_path: Path
) -> None:
    first = deploy_now(shop)
    live = services.live_release(shop)
    assert first.state == State.SUCCEEDED and live is not None
    name_plan(shop, plan)
    shutil.rmtree(tmp_path / "restic")  # the repository is gone: restic cannot back up
    push(tmp_path / "repo", "v2")
    failed = deploy_now(shop)
    assert failed.state == State.FAILED
    assert failed.reason.startswith("the backup before migrations failed: local: ")
    assert failed.reason.endswith(
        "; nothing changed; fix the backup or deploy without it (onwatch deploy shop "
        f"--skip-backup); {live} still serves shop.test"
    )
    assert names(failed)[-1] == "backup" and not failed.steps[-1]["ok"]
    assert "release command" not in names(failed)
    assert failed.release is not None and failed.release.state == ReleaseState.FAILED
    assert answers(machine) == {"v1"} and services.live_release(shop) == live
    assert [j.state for j in backup_jobs()] == [JobState.FAILED]
    [alert] = alerts_titled(f"Deploy #{failed.pk} of shop failed")
    assert "the backup before migrations failed" in alert.body

    skipped = deploy_now(shop, skip_backup=True)
    assert skipped.state == State.SUCCEEDED, skipped.reason
    step = next(s for s in skipped.steps if s["name"] == "backup")
    assert step["ok"] and step["detail"] == "skipped on purpose: cli deployed without it"
    assert len(backup_jobs()) == 1  # no backup was started
    assert skipped.release is not None and skipped.release.backup_text == ""
    entry = AuditEntry.objects.get(action="deploy-queued", data__id=skipped.pk)
    assert entry.data["skip_backup"] is True
    assert answers(machine) == {"v2"}


def test_a_release_without_a_release_command_deploys_without_a_backup(
    machine: Machine, shop: Service, plan: Plan, tmp_path: Path
) -> None:
    name_plan(shop, plan)
    files = app_files("v2")
    files["onwatch.toml"] = files["onwatch.toml"].replace(
        f'[release]\ncommand = "{RELEASE_OK}"\n', ""
    )
    assert "[release]" not in files["onwatch.toml"]
    commit(tmp_path / "repo", files, "No migrations")
    deploy = deploy_now(shop)
    assert deploy.state == State.SUCCEEDED, deploy.reason
    assert "release command" not in names(deploy) and "backup" not in names(deploy)
    assert backup_jobs() == []
    assert answers(machine) == {"v2"}


def test_a_deploy_cancelled_while_it_waits_for_its_backup_leaves_that_backup_to_finish(
    machine: Machine, shop: Service, plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(releases, "BACKUP_START_SECONDS", 1.0)
    name_plan(shop, plan)
    deploy = services.queue_deploy(shop, SYSTEM, "cli")
    # Only the deploy's own queue runs: its backup stays queued, and the deploy waits.
    done = threading.Thread(target=jobs.run_pending, kwargs={"kinds": [services.DEPLOY_KIND]})
    done.start()
    wait_until(lambda: beside_a_writer(backup_jobs) != [], 120, "the backup to be started")
    # A backup that does not start (its queue is busy) is said in the deploy's log, once.
    waits = "has not started yet: it waits for a free slot of the backups' queue"
    wait_until(lambda: waits in log_text(deploy.job_id), 30, "the deploy to say why it waits")
    job = deploy.job
    assert job is not None
    beside_a_writer(lambda: jobs.cancel(job, "test"))
    done.join(timeout=60)
    deploy.refresh_from_db()
    assert (deploy.state, deploy.reason) == (State.CANCELLED, "cancelled")
    assert "release command" not in names(deploy)
    assert deploy.release is not None
    assert "that backup (job #" in deploy.release.reason
    assert "goes on to its end" in deploy.steps[-1]["detail"]
    assert log_text(deploy.job_id).count(waits) == 1
    # The backup it started runs to its end, untouched by the cancel.
    [backup] = jobs.run_pending(kinds=["backups.run"])
    assert backup.state == JobState.SUCCEEDED
    assert BackupRun.objects.get(job=backup).copies.get().good
    assert services.live_release(shop) is None
