"""Append-only copies, the usual defence against ransomware: found (a REST server that
refuses deletions) or declared (any other), never forgotten or pruned by onwatch, and no
alert for what their server rightly refuses. Real `rclone serve restic --append-only`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from onwatch.backups import restic, runs, services
from onwatch.backups.models import Plan, Repository, SourceKind
from onwatch.core import jobs
from onwatch.core.models import AuditEntry, JobState, Organization
from tests.support.backups import (
    RestServer,
    alerts_titled,
    channel,
    directory,
    local_repo,
    plan_for,
)
from tests.support.fixtures import signed_in

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db,
    pytest.mark.usefixtures("channel", "fast_passwords"),
]
__all__ = ["channel"]

REFUSED = (
    "unable to remove <snapshot/28660d2ca0> from the repository\n"
    "blob not removed, server response: 403 Forbidden (403)\n"
)


def backed_up(plan: Plan) -> bool:
    jobs.enqueue("backups.run", {"plan": plan.pk}, org=plan.org)
    [job] = jobs.run_pending(kinds=["backups.run"])
    return job.state == JobState.SUCCEEDED


def snapshot_count(repository: Repository) -> int:
    return len(restic.snapshots(services.repo_of(repository)))


def test_an_append_only_rest_server_is_found_when_the_repository_is_added(
    org: Organization, tmp_path: Path
) -> None:
    with (
        RestServer(tmp_path / "locked", append_only=True) as locked,
        RestServer(tmp_path / "open") as open_,
    ):
        vault = services.add_repository(org, "vault", locked.url, provider="office")
        plain = services.add_repository(org, "plain", open_.url, provider="office")
    assert vault.append_only and not plain.append_only
    # The question is asked without deleting anything: the repository is whole.
    assert (tmp_path / "locked" / "config").is_file()


def test_after_every_good_backup_an_append_only_copy_is_left_to_its_server_quietly(
    org: Organization, tmp_path: Path
) -> None:
    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "up"))
    )
    local = local_repo(org, tmp_path / "local")
    with RestServer(tmp_path / "vault", append_only=True) as server:
        vault = services.add_repository(org, "vault", server.url, provider="ovh")
        # As every repository stands after the upgrade: not marked, and found at its first
        # retention instead.
        Repository.objects.filter(pk=vault.pk).update(append_only=False)
        plan = plan_for(source, [local, vault], keep_daily=0, keep_weekly=0, keep_monthly=0)
        for _ in range(2):
            assert backed_up(plan)
        started = time.monotonic()
        prunes = jobs.run_pending(kinds=["backups.prune"])
        took = time.monotonic() - started
        assert [p.state for p in prunes] == [JobState.SUCCEEDED] * 2, [p.error for p in prunes]
        assert snapshot_count(vault) == 2  # kept: its server decides
        assert snapshot_count(local) == 1  # the plan's rules still apply elsewhere
    # No 45 s of restic retrying a refused delete, and nothing to alert on.
    assert took < 20, f"{took:.1f} s"
    assert not alerts_titled("failed")
    assert "vault: append-only; onwatch keeps every backup there" in prunes[-1].log
    vault.refresh_from_db()
    assert vault.append_only
    [found] = AuditEntry.objects.filter(action="backup-repository-append-only")
    assert found.target == "vault" and "refused" in found.data["why"]


def test_a_declared_append_only_copy_is_never_pruned_and_says_who_prunes_it(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "up"))
    )
    nas = local_repo(org, tmp_path / "nas", name="nas")
    plan = plan_for(source, [nas], keep_daily=0, keep_weekly=0, keep_monthly=0)
    client = signed_in(members["admin"])
    edit = reverse("backup_repository_edit", args=[nas.pk])
    data = {"name": "nas", "provider": "hetzner", "location": "fsn1", "url": "", "env": ""}
    r = client.post(edit, {**data, "append_only": "on"})
    assert "Say who removes old backups from this append-only copy" in r.content.decode()
    r = client.post(edit, {**data, "append_only": "on", "pruned_by": "Sam, monthly"})
    assert r.status_code == 302
    nas.refresh_from_db()
    assert nas.append_only and nas.pruned_by == "Sam, monthly"

    for _ in range(2):
        assert backed_up(plan)
    prunes = jobs.run_pending(kinds=["backups.prune"])
    assert [p.state for p in prunes] == [JobState.SUCCEEDED] * 2
    assert snapshot_count(nas) == 2
    assert "Sam, monthly removes old ones" in prunes[-1].log
    jobs.enqueue("backups.reclaim_all", {}, org=None)
    [weekly] = jobs.run_pending(kinds=["backups.reclaim_all"])
    assert weekly.result == {"jobs": []}  # the weekly prune leaves it alone too
    page = signed_in(members["viewer"]).get(reverse("backup_repository", args=[nas.pk]))
    assert "append-only</strong>" in page.content.decode()
    assert "Sam, monthly removes old ones" in page.content.decode()
    plan_page = signed_in(members["viewer"]).get(reverse("backup_plan", args=[plan.pk]))
    assert ">append-only</span>" in plan_page.content.decode()


def test_a_refused_delete_is_told_apart_from_other_failures() -> None:
    found = restic.classify(REFUSED, 1, "rest:http://127.0.0.1:8000/", (0, 14, 0))
    assert isinstance(found, restic.DeletesRefused)
    assert "append-only" in str(found)


def test_a_server_that_refuses_the_forget_itself_is_marked_append_only_not_alerted(
    org: Organization, tmp_path: Path
) -> None:
    """Where asking first cannot tell (S3 object lock, a B2 key without delete), restic's
    refused delete is understood: restic is stopped at its first refusal rather than left
    to retry it for some 45 s, and its lock goes with it."""
    up = directory(tmp_path / "up")
    source = services.add_source(org, "uploads", SourceKind.DIRECTORY, path=str(up))
    with RestServer(tmp_path / "vault", append_only=True) as server:
        vault = services.add_repository(org, "vault", server.url, provider="ovh")
        Repository.objects.filter(pk=vault.pk).update(append_only=False)
        vault.refresh_from_db()
        plan = plan_for(source, [vault], keep_daily=0, keep_weekly=0, keep_monthly=0)
        for _ in range(2):
            runs.run_backup(plan, print)
        lines: list[str] = []
        started = time.monotonic()
        assert runs.apply_retention(plan, vault, lines.append) == ""
        took = time.monotonic() - started
        assert snapshot_count(vault) == 2
        # Interrupted, restic removed its own lock: the next restic needs no unlock.
        repo = services.repo_of(vault)
        assert restic.locks(repo) == []
        assert restic.backup_paths(repo, [str(up)], ["after"]).snapshot_id
    # The refusal comes within a second; restic alone would retry it for some 45 s.
    assert took < 10, f"{took:.1f} s"
    vault.refresh_from_db()
    assert vault.append_only
    assert any("vault: append-only; onwatch keeps every backup there" in ln for ln in lines)


NOBODY = "name who removes old ones"


def test_an_append_only_copy_found_with_nobody_to_prune_it_is_a_thing_to_do(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "up"))
    )
    with RestServer(tmp_path / "vault", append_only=True) as server:
        vault = services.add_repository(org, "vault", server.url, provider="ovh")
        # Found when added: told at once, with what to do and where.
        [told] = alerts_titled(NOBODY)
        assert told.title == f"vault keeps every backup: {NOBODY}"
        assert "What to do: on the repository's page press Change" in told.body
        assert f"/backups/repositories/{vault.pk}/" in told.body
        # As it stands after the upgrade: not marked, found at its first retention, told
        # once however many prunes follow.
        Repository.objects.filter(pk=vault.pk).update(append_only=False)
        plan = plan_for(source, [vault], keep_daily=0, keep_weekly=0, keep_monthly=0)
        for _ in range(3):
            assert backed_up(plan)
            jobs.run_pending(kinds=["backups.prune"])
    assert len(alerts_titled(NOBODY)) == 2
    viewer, admin = signed_in(members["viewer"]), signed_in(members["admin"])
    page = viewer.get(reverse("backup_repository", args=[vault.pk])).content.decode()
    assert "To do:</strong> name who removes old backups there" in page
    overview = viewer.get(reverse("backups")).content.decode()
    assert "To do:</strong> name who removes old backups from this append-only" in overview
    assert f'<a href="/backups/repositories/{vault.pk}/">vault</a>: name who' in overview

    data = {"name": "vault", "provider": "ovh", "location": "", "url": "", "env": ""}
    edit = reverse("backup_repository_edit", args=[vault.pk])
    r = admin.post(edit, {**data, "append_only": "on", "pruned_by": "Sam, monthly"})
    assert r.status_code == 302
    page = viewer.get(reverse("backup_repository", args=[vault.pk])).content.decode()
    assert "To do:" not in page and "Sam, monthly removes old ones" in page
    assert "To do:" not in viewer.get(reverse("backups")).content.decode()
