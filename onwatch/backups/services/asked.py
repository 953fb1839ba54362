"""Backups another app asks for: the plans a service may name, and a backup of one started
now as a job of its own (the deploys app takes one before a release's migrations), with
how it ended read back. The backups app knows nothing of who asks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onwatch.backups.models import BackupRun, Plan
from onwatch.backups.services import Refused
from onwatch.backups.services.actors import Actor
from onwatch.core import jobs
from onwatch.core.models import ENDED, Job, JobState, Organization

RUN_KIND = "backups.run"


@dataclass(frozen=True)
class Asked:
    """How a backup started with `start_backup` stands: `ended` (else whether it has
    `started`), and when it ended, whether it is good (every copy), its first snapshot and
    when it ended, or why not."""

    ended: bool
    ok: bool = False
    snapshot: str = ""
    at: datetime | None = None
    error: str = ""
    started: bool = True


def plan_choices(org: Organization) -> list[tuple[int, str]]:
    """(id, name) of the organization's backup plans, by name."""
    return list(Plan.objects.filter(org=org).order_by("name").values_list("id", "name"))


def plan_named(org: Organization, name: str) -> int:
    """The id of the organization's plan called `name`; Refused when there is none."""
    found = Plan.objects.filter(org=org, name=name).values_list("id", flat=True).first()
    if found is None:
        raise Refused(f"There is no backup plan called {name!r}; the Backups page lists the plans")
    return found


def plan_name(plan_id: int) -> str:
    return Plan.objects.filter(pk=plan_id).values_list("name", flat=True).first() or "(removed)"


def plan_problem(org: Organization, plan_id: int) -> str | None:
    """Why `plan_id` cannot be named by something of `org`; None when it can."""
    if not Plan.objects.filter(org=org, pk=plan_id).exists():
        return f"There is no backup plan {plan_id} in this organization"
    return None


def start_backup(plan_id: int, actor: Actor, why: str) -> int:
    """Queue a backup of the plan now, as the "back up now" button does; audited with
    `why`. The job's id, for `backup_state`."""
    plan = Plan.objects.select_related("org").get(pk=plan_id)
    job = jobs.enqueue(RUN_KIND, {"plan": plan.pk}, org=plan.org)
    actor.record("backups-run-started", plan.org, plan.name, job=job.pk, why=why)
    return job.pk


def backup_state(job_id: int) -> Asked:
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return Asked(True, error=f"its job #{job_id} was removed")
    if job.state not in ENDED:
        return Asked(False, started=job.state != JobState.QUEUED)
    run = BackupRun.objects.filter(job=job).order_by("-pk").first()
    if job.state != JobState.SUCCEEDED or run is None:
        said = (run.error if run is not None else "") or job.error
        return Asked(True, error=said or f"its job #{job.pk} ended {job.state}")
    first = run.copies.filter(good=True).exclude(snapshot_id="").order_by("pk").first()
    return Asked(True, True, first.snapshot_id if first else "", run.finished_at)
