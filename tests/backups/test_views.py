"""The Backups pages: per plan the last backup, last proven restorable, RPO and RTO."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from onwatch.alerts.models import Delivery
from onwatch.backups import restores, rpo, services
from onwatch.backups.drills import run_drill
from onwatch.backups.kit import recovery_kit
from onwatch.backups.models import BackupRun, Drill, Plan, Restore, RunCopy, SourceKind
from onwatch.backups.runs import run_backup
from onwatch.core import jobs
from onwatch.core.models import Job, Organization
from tests.support.backups import channel, damage_data_packs, directory, local_repo
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
__all__ = ["channel"]


def dir_plan(org: Organization, tmp_path: Path) -> Plan:
    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "up"))
    )
    return services.add_plan(source, "uploads nightly", [local_repo(org, tmp_path / "repo")])


def test_the_list_shows_runs_drills_and_the_not_offsite_flag(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    client = signed_in(members["viewer"])
    before = client.get(reverse("backups")).content.decode()
    assert "uploads nightly" in before and "never" in before and "not offsite" in before
    run_backup(plan, print)
    drill = run_drill(plan, print)
    assert drill.verified
    page = client.get(reverse("backups")).content.decode()
    assert f"{drill.started_at:%Y-%m-%d %H:%M}" in page
    assert f"{drill.rto_seconds:.1f} s" in page
    detail = client.get(reverse("backup_plan", args=[plan.pk])).content.decode()
    assert "Not offsite" in detail and "Restore drills" in detail
    assert drill.snapshot_id[:8] in detail


def test_another_organizations_plan_is_not_found(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    other = Organization.objects.create(name="Other")
    plan = dir_plan(other, tmp_path)
    r = signed_in(members["owner"]).get(reverse("backup_plan", args=[plan.pk]))
    assert r.status_code == 404


@pytest.mark.usefixtures("channel")
def test_an_rpo_breach_alerts_once_and_a_good_backup_clears_it(
    org: Organization, tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    later = timezone.now() + timedelta(minutes=plan.rpo_minutes + 5)
    assert rpo.check_all(later) == 1
    assert rpo.check_all(later) == 0  # one alert per breach
    # Never backed up: said so, not as the age of a copy that does not exist.
    [alert] = Delivery.objects.filter(title="No good backup of uploads nightly yet")
    assert alert.org == org and "has no good copy yet" in alert.body
    assert "newest good copy" not in alert.body
    run_backup(plan, print)
    assert rpo.rpo_now(plan) < timedelta(minutes=5)
    assert rpo.check_all(timezone.now()) == 0
    plan.refresh_from_db()
    assert plan.rpo_alerted_at is None
    # A plan that has good copies, all too old, is told by the age of the newest one.
    assert rpo.check_all(timezone.now() + timedelta(minutes=plan.rpo_minutes + 5)) == 1
    [old] = Delivery.objects.filter(title__contains="older than the RPO target")
    assert "The newest good copy is 26.1 h old" in old.body


def test_a_plain_http_repository_saved_before_the_rule_is_flagged(
    org: Organization, members: dict[str, Any]
) -> None:
    from onwatch.backups.models import Repository

    for name, url in (("old rest", "rest:http://backup.example:8000/"), ("nas", "/mnt/nas")):
        Repository.objects.create(
            org=org, name=name, url=url, shown_url=url, password="x", provider="p"
        )
    body = signed_in(members["viewer"]).get(reverse("backup_repositories")).content.decode()
    rows = {
        name: body[body.index(name) : body.index("</tr>", body.index(name))]
        for name in ("old rest", "nas")
    }
    assert "plain HTTP" in rows["old rest"] and "https://" in rows["old rest"]
    assert "plain HTTP" not in rows["nas"]


def overview_row(client: Any, name: str) -> str:
    body: str = client.get(reverse("backups")).content.decode()
    start = body.index(f">{name}</a>")
    return body[start : body.index("</tr>", start)]


def test_a_plan_that_never_ran_is_not_shown_as_losing_nothing(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    client = signed_in(members["viewer"])
    row = overview_row(client, plan.name)
    assert "0.0 h" not in row
    assert 'class="rpo state-failed">no backup yet / 26.0 h' in row
    assert "No: no good backup yet" in row and "no drill yet" in row
    detail = client.get(reverse("backup_plan", args=[plan.pk])).content.decode()
    assert "0.0 h</strong>" not in detail
    assert "there is no good backup yet, so a failure now would lose everything" in detail
    assert "Your data is not safe yet: no good backup yet" in detail


def test_a_drill_that_failed_on_a_damaged_pack_is_the_problem_on_the_overview(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    run_backup(plan, print)
    proven = run_drill(plan, print)
    assert proven.verified
    client = signed_in(members["viewer"])
    assert f"{proven.started_at:%Y-%m-%d %H:%M}" in overview_row(client, plan.name)

    damage_data_packs(tmp_path / "repo")
    failed = run_drill(plan, print)
    assert failed.state == "failed" and failed.rto_seconds is None
    assert failed.snapshot_id == proven.snapshot_id
    row = overview_row(client, plan.name)
    # The snapshot the old drill proved just failed to restore: it proves nothing now.
    assert 'class="proven"><span class="state-failed">none</span>' in row
    assert "—" not in row and "failed" in row and "nothing restored" in row
    assert "No: last restore drill failed, not proven restorable" in row
    detail = client.get(reverse("backup_plan", args=[plan.pk])).content.decode()
    # Both drills are dots on the RTO chart; the failed one is red, on the top edge.
    assert detail.count('class="drill ok"') == 1
    assert detail.count('class="drill bad failed"') == 1


def test_a_snapshot_its_newest_drill_could_not_restore_is_offered_nowhere(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    """Restore page, `onwatch restore` (restores.choose) and the recovery kit all pass over
    the newest backup once a drill failed on it, and say why."""
    plan = dir_plan(org, tmp_path)
    older = run_backup(plan, print).copies.get()
    packs = frozenset((tmp_path / "repo" / "data").glob("*/*"))
    (tmp_path / "up" / "new.bin").write_bytes(os.urandom(50000))
    newer = run_backup(plan, print).copies.get()
    # Only the newer backup's own packs rot: the older snapshot stays whole.
    damage_data_packs(tmp_path / "repo", only_not=packs)
    failed = run_drill(plan, print)
    assert failed.state == "failed" and not failed.verified and failed.run_id == newer.run_id

    chosen = restores.choose(plan)
    assert chosen.run_id == older.run_id
    with pytest.raises(restores.RestoreRefused, match="could not bring it back whole"):
        restores.choose(plan, newer.snapshot_id[:8])
    page = signed_in(members["admin"]).get(reverse("backup_restore_start", args=[plan.pk]))
    html = page.content.decode()
    assert re.search(rf'value="{chosen.snapshot.id}"[^>]*checked', html)
    assert f'value="{newer.snapshot_id}' not in html
    assert f"Backup #{newer.run_id} (snapshot {newer.snapshot_id[:8]}): the restore drill" in html
    kit = recovery_kit(older.repository, timezone.now(), "test")
    section = kit.split(f"### Plan {plan.name}", 1)[1]
    assert f"`{newer.snapshot_id}`" not in section and f"`{older.snapshot_id}`" in section
    assert f"Do not use backup #{newer.run_id} (snapshot {newer.snapshot_id[:8]})" in section


def test_a_drill_that_passes_again_brings_the_snapshot_back(
    org: Organization, tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    run_backup(plan, print)
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "repo", pristine)
    damage_data_packs(tmp_path / "repo")
    assert run_drill(plan, print).state == "failed"
    assert services.verified_copies(plan, plan.copies.get()) == []
    # The repository is repaired (restored from its own copy): a passing drill counts again.
    shutil.rmtree(tmp_path / "repo")
    shutil.copytree(pristine, tmp_path / "repo")
    assert run_drill(plan, print).verified
    assert len(services.verified_copies(plan, plan.copies.get())) == 1


def dead_workers_job(kind: str, plan: Plan) -> Job:
    """A job of `plan` a worker claimed and then stopped answering for (its lease ran out)."""
    queued = jobs.enqueue(kind, {"plan": plan.pk}, org=plan.org)
    claimed = jobs.claim("gone:1:1", [kind])
    assert claimed is not None and claimed.pk == queued.pk
    Job.objects.filter(pk=claimed.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    return claimed


@pytest.mark.usefixtures("channel")
def test_runs_drills_and_restores_whose_worker_died_say_so_on_every_page(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = dir_plan(org, tmp_path)
    good = run_backup(plan, print)
    proof = run_drill(plan, print)
    # What a worker leaves when it dies mid-way: its rows say running.
    cut = BackupRun.objects.create(plan=plan, job=dead_workers_job("backups.run", plan))
    # It died after its copy was stored, before it recorded what was in it.
    RunCopy.objects.create(
        run=cut, repository=plan.copies.get(), snapshot_id="c0ffee" * 6, good=True
    )
    halted = Drill.objects.create(plan=plan, job=dead_workers_job("backups.drill", plan))
    stuck = Restore.objects.create(
        plan=plan, job=dead_workers_job("backups.restore", plan), target="/srv/put-back"
    )
    assert len(jobs.reap_expired()) == 3
    client = signed_in(members["viewer"])
    row = overview_row(client, plan.name)
    assert "last backup did not finish" in row and "interrupted" in row
    assert f"(the drill of {halted.started_at:%Y-%m-%d %H:%M} did not finish)" in row
    # It proved nothing: the proof and the drill's verdict are the last good drill's.
    assert f'class="proven">{proof.started_at:%Y-%m-%d %H:%M}<' in row
    assert f"{proof.rto_seconds:.1f} s" in row
    detail = client.get(reverse("backup_plan", args=[plan.pk])).content.decode()
    assert detail.count('<td class="state-interrupted">interrupted:') == 3
    assert "nothing it made is used for restores" in detail
    assert detail.count('class="drill ok"') == 1 and 'class="drill bad' not in detail
    page = client.get(reverse("backup_restore", args=[stuck.pk])).content.decode()
    assert "The restore did not finish:" in page and "remove it before you restore" in page
    # One alert per job, the job's own.
    assert sorted(Delivery.objects.values_list("title", flat=True)) == [
        "Backup of uploads nightly was interrupted",
        "Restore drill of uploads nightly was interrupted",
        "Restore of uploads nightly was interrupted",
    ]
    assert "c0ffeec0 (not used)" in detail
    # Restores, drills and the RPO pass its copy by.
    assert [c.run_id for c in services.verified_copies(plan, plan.copies.get())] == [good.pk]
    assert rpo.newest_good(plan) == good.started_at
