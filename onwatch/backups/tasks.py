"""Job handlers: a backup run and a restore drill are durable jobs; a failed one fails
its job, and the job failure path raises the alert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import reverse
from django.utils import timezone

from onwatch.alerts.services import raise_alert
from onwatch.backups import restore_requests, runs
from onwatch.backups.drills import run_drill
from onwatch.backups.models import BackupRun, Drill, Outcome, Plan, Repository, Restore
from onwatch.backups.runs import run_backup
from onwatch.core.jobs import (
    JobCancelled,
    JobContext,
    JobFailed,
    enqueue,
    handler,
    when_cancelled,
    when_interrupted,
)
from onwatch.core.models import Job


def plan_of(ctx: JobContext) -> Plan:
    plan = Plan.objects.select_related("source").filter(pk=ctx.job.payload.get("plan")).first()
    if plan is None:
        raise JobFailed("the backup plan was removed; nothing to do")
    return plan


def of_plan(what: str) -> Callable[[Job], str]:
    """Describe a job by what it does and the plan it is for ("Backup of nightly")."""

    def describe(job: Job) -> str:
        name = Plan.objects.filter(pk=job.payload.get("plan")).values_list("name", flat=True)
        found = name.first()
        return f"{what} of {found}" if found else what

    return describe


def of_repository(job: Job) -> str:
    found = Repository.objects.filter(pk=job.payload.get("repository"))
    name = found.values_list("name", flat=True).first()
    return f"Freeing space in {name}" if name else "Freeing space in a repository"


@handler("backups.run", queue="long", describe=of_plan("Backup"))
def backup(ctx: JobContext) -> dict[str, Any]:
    plan = plan_of(ctx)
    ctx.log(f"backing up {plan.source.name} ({plan.source.kind}) for plan {plan.name}")
    run = run_backup(plan, ctx.log, ctx=ctx)
    if run.state == Outcome.CANCELLED:
        raise JobCancelled("cancelled")
    if run.state != Outcome.SUCCEEDED:
        raise JobFailed(f"Backup of {plan.name} failed: {run.error}")
    ctx.log(f"done in {run.seconds:.1f} s")
    pruning = enqueue("backups.prune", {"plan": plan.pk}, org=plan.org)
    ctx.log(f"old snapshots are forgotten by job #{pruning.pk}")
    return {"run": run.pk, "snapshots": list(run.copies.values_list("snapshot_id", flat=True))}


@handler("backups.prune", queue="long", describe=of_plan("Pruning old backups"))
def prune(ctx: JobContext) -> dict[str, Any]:
    plan = plan_of(ctx)
    ctx.log(f"pruning old snapshots of {plan.name}")
    problems = runs.prune(plan, ctx.log)
    if problems:
        raise JobFailed(f"Pruning old backups of {plan.name} failed: {'; '.join(problems)}")
    return {"plan": plan.pk}


@handler("backups.reclaim_all")
def reclaim_all(ctx: JobContext) -> dict[str, Any]:
    """The weekly space reclaim: a job per repository, so each one that fails is a failure
    of its own, alerted on, and the others still run."""
    queued = [
        enqueue("backups.reclaim", {"repository": r.pk}, org=r.org).pk
        for r in Repository.objects.filter(ready=True, append_only=False)
        .select_related("org")
        .order_by("pk")
    ]
    ctx.log(f"queued {len(queued)} repository job(s)")
    return {"jobs": queued}


@handler("backups.reclaim", queue="long", describe=of_repository)
def reclaim(ctx: JobContext) -> dict[str, Any]:
    repository = Repository.objects.filter(pk=ctx.job.payload.get("repository")).first()
    if repository is None:
        raise JobFailed("the repository was removed; nothing to do")
    if runs.left_to_its_server(repository, ctx.log):
        return {"repository": repository.pk, "append_only": True}
    ctx.log(f"freeing the space of forgotten snapshots in {repository.name}")
    try:
        summary = runs.reclaim(repository, ctx.log)
    except runs.ReclaimFailed as e:
        raise JobFailed(f"Freeing space in {repository.name} failed: {e}") from None
    return {"repository": repository.pk, "freed": summary.freed, "in_use": summary.remaining}


@handler("backups.drill", queue="long", describe=of_plan("Restore drill"))
def drill(ctx: JobContext) -> dict[str, Any]:
    plan = plan_of(ctx)
    ctx.log(f"restore drill of {plan.name}")
    d = run_drill(plan, ctx.log, ctx=ctx)
    for c in d.checks:
        ctx.log(f"{'ok ' if c['ok'] else 'BAD'} {c['check']}: {c['detail']}")
    if d.state == Outcome.CANCELLED:
        raise JobCancelled("cancelled")
    if d.state != Outcome.SUCCEEDED:
        raise JobFailed(f"Restore drill of {plan.name} failed: {d.error}")
    ctx.log(f"restorable: RTO {d.rto_seconds:.1f} s (target {plan.rto_minutes} min)")
    return {"drill": d.pk, "rto_seconds": d.rto_seconds}


@handler("backups.restore", queue="long", describe=of_plan("Restore"))
def restore(ctx: JobContext) -> dict[str, Any]:
    """A restore asked for in the UI (restore_requests.py)."""
    return restore_requests.run(ctx)


def restore_cancelled(job: Job) -> None:
    """A restore cancelled before it started says so, instead of looking under way. One
    the handler ended keeps what it recorded (a restore that succeeded stays succeeded, a
    stopped one says what its clean-up left); one that left something behind alerts, as
    cancelled jobs otherwise do not."""
    Restore.objects.filter(job=job, state=Outcome.RUNNING).update(
        state=Outcome.CANCELLED, error=job.error, finished_at=timezone.now()
    )
    for left in Restore.objects.filter(job=job, state=Outcome.CANCELLED, left_behind=True):
        alert_left_behind(job, left)


def alert_left_behind(job: Job, restore: Restore) -> None:
    raise_alert(
        org=job.org,
        title=f"A cancelled restore of {restore.plan.name} left something behind",
        body="\n".join(
            [
                f"What is wrong: {restore.error}",
                "What to do: remove it as the line above says, so nobody takes it for a "
                "finished restore.",
            ]
        ),
        link=reverse("backup_restore", args=[restore.pk]),
    )


def rows_cancelled(model: type[BackupRun] | type[Drill]) -> Callable[[Job], None]:
    """A run or drill its handler could not end (it crashed on the way) says cancelled
    rather than looking under way for ever; one the handler ended keeps its verdict."""

    def cancelled(job: Job) -> None:
        model.objects.filter(job=job, state=Outcome.RUNNING).update(
            state=Outcome.CANCELLED, error=job.error, finished_at=timezone.now()
        )

    return cancelled


# What a run, drill or restore cut short by a dead worker means, after its job's error.
WHAT_INTERRUPTED_MEANS = {
    BackupRun: "nothing it made is used for restores",
    Drill: "it proved nothing either way about the backup it was restoring",
    Restore: (
        "its clean-up did not run, so part of the restore may be left in its target; "
        "remove it before you restore there again"
    ),
}


def rows_interrupted(model: type[BackupRun] | type[Drill] | type[Restore]) -> Callable[[Job], None]:
    """A run, drill or restore whose worker died says interrupted rather than looking
    under way for ever. No alert of its own: the job's interruption alert is the one."""

    def interrupted(job: Job) -> None:
        model.objects.filter(job=job, state=Outcome.RUNNING).update(
            state=Outcome.INTERRUPTED,
            error=f"{job.error}; {WHAT_INTERRUPTED_MEANS[model]}",
            finished_at=job.finished_at or timezone.now(),
        )

    return interrupted


when_cancelled("backups.restore", restore_cancelled)
when_cancelled("backups.run", rows_cancelled(BackupRun))
when_cancelled("backups.drill", rows_cancelled(Drill))
when_interrupted("backups.restore", rows_interrupted(Restore))
when_interrupted("backups.run", rows_interrupted(BackupRun))
when_interrupted("backups.drill", rows_interrupted(Drill))
