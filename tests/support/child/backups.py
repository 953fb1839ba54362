"""Child-process functions on backups (see tests.support.child)."""

from __future__ import annotations

import tempfile
from typing import Any

from onwatch.backups import restic, services
from onwatch.backups.models import Plan, Restore
from onwatch.backups.runs import run_backup, snapshot_name
from onwatch.core.models import AuditEntry, Organization


def make_plan(kind: str, repo: str, source: dict[str, Any]) -> None:
    """A plan and one good backup of it, made the way onwatch makes them."""
    org = Organization.objects.create(name="Acme")
    repository = services.add_repository(org, "local", repo, provider="here")
    plan = services.add_plan(
        services.add_source(org, "app", kind, **source), "nightly", [repository]
    )
    run = run_backup(plan, print)
    assert run.state == "succeeded", run.error


def print_restore_audit() -> None:
    """Who restored what where, from the audit entry: "actor target to"."""
    e = AuditEntry.objects.get(action="backup-restored")
    print(e.actor, e.target, e.data["to"])


def print_restore_rows() -> None:
    """Each restore on the plan's page, and who asked for it in the audit log:
    "requested_by state target asked_by"."""
    for restore in Restore.objects.order_by("pk"):
        asked = AuditEntry.objects.get(action="backup-restore-requested", data__restore=restore.pk)
        print(restore.requested_by, restore.state, restore.target, asked.actor)


def add_unverified_snapshot() -> None:
    """What a worker killed mid-run leaves: the plan's tags on a file that is no database."""
    plan = Plan.objects.get()
    with tempfile.TemporaryFile() as f:
        f.write(b"not a database" * 1000)
        f.seek(0)
        repo = services.repo_of(plan.copies.get())
        name, tags = snapshot_name(plan), ["onwatch", plan.tag, "run:99"]
        restic.finish_backup(restic.start_backup_stdin(repo, name, tags, f))
