"""Restores people ask for: the Restore row (on the plan's page), its audit entry and,
from the UI, the job that runs it. The CLI runs its restore itself, in the foreground."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from onwatch.backups.models import Plan, Repository, Restore
from onwatch.backups.services import Refused
from onwatch.backups.services.actors import Actor
from onwatch.core import jobs

if TYPE_CHECKING:
    from onwatch.backups.restore_requests import Target


def request_restore(
    plan: Plan, repository: Repository, snapshot_id: str, target: Target, actor: Actor
) -> Restore:
    """The Restore row and its queued job, together or not at all. The job's payload says
    where to restore, never how to sign in there. Raises Refused."""
    from onwatch.backups.restore_requests import shown

    with transaction.atomic():
        restore = new_restore(plan, repository, snapshot_id, shown(plan.source, target), actor)
        restore.job = jobs.enqueue(
            "backups.restore",
            {"plan": plan.pk, "restore": restore.pk, **target.payload()},
            org=plan.org,
        )
        restore.save(update_fields=["job"])
    return restore


def restore_here(
    plan: Plan, repository: Repository, snapshot_id: str, shown_target: str, actor: Actor
) -> Restore:
    """The Restore row of a restore its caller runs itself (`onwatch restore`), which
    finishes the row. `shown_target` carries no password. Raises Refused."""
    return new_restore(plan, repository, snapshot_id, shown_target, actor)


def new_restore(
    plan: Plan, repository: Repository, snapshot_id: str, shown_target: str, actor: Actor
) -> Restore:
    if not plan.copies.filter(pk=repository.pk).exists():
        raise Refused(f"{repository.name} is not one of the copies of {plan.name}")
    with transaction.atomic():
        restore = Restore.objects.create(
            plan=plan,
            repository=repository,
            snapshot_id=snapshot_id,
            target=shown_target,
            requested_by=actor.name,
        )
        actor.record(
            "backup-restore-requested",
            plan.org,
            plan.name,
            restore=restore.pk,
            snapshot=snapshot_id,
            repository=repository.name,
            to=restore.target,
        )
    return restore
