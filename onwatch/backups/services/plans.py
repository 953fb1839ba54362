"""Plans: a source, the repositories it is copied to, and the two schedules (backup and
restore drill) that run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from onwatch.backups.models import Plan, Repository, Source
from onwatch.backups.services import WEEKLY_DRILL, Refused, name_problem
from onwatch.backups.services.actors import SYSTEM, Actor
from onwatch.core.crons import validate_schedule
from onwatch.core.models import Schedule

NUMBERS = ("keep_daily", "keep_weekly", "keep_monthly", "rpo_minutes", "rto_minutes")


@dataclass(frozen=True)
class PlanFields:
    name: str
    source: Source
    copies: list[Repository] = field(default_factory=list)
    cron: str = "0 3 * * *"
    tz: str = "UTC"
    drill_cron: str = WEEKLY_DRILL
    drill_from: Repository | None = None
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    rpo_minutes: int = 26 * 60
    rto_minutes: int = 60


def drill_from_problem(drill_from: Repository | None, copies: list[Repository]) -> str | None:
    if drill_from is not None and drill_from not in copies:
        return f"{drill_from.name} is not one of the copies; tick it above."
    return None


def plan_problem(fields: PlanFields, plan: Plan | None) -> str | None:
    """What the rules refuse in a new or changed plan, in words; None when fine."""
    org = fields.source.org
    if plan is not None and plan.org_id != org.pk:
        return f"{fields.source.name} belongs to another organization"
    if any(c.org_id != org.pk for c in fields.copies):
        return "every copy must be a repository of the plan's organization"
    if problem := drill_from_problem(fields.drill_from, fields.copies):
        return problem
    for cron in (fields.cron, fields.drill_cron):
        try:
            validate_schedule(cron.strip(), fields.tz.strip())
        except ValidationError as e:
            return str(e.messages[0])
    return name_problem(Plan, org, fields.name.strip(), plan)


def add_plan(
    source: Source,
    name: str,
    copies: list[Repository],
    cron: str = "0 3 * * *",
    tz: str = "UTC",
    drill_cron: str = WEEKLY_DRILL,
    *,
    actor: Actor = SYSTEM,
    **numbers: Any,
) -> Plan:
    """`numbers` as in PlanFields (drill_from, keep_daily, …). Raises Refused."""
    fields = PlanFields(name, source, list(copies), cron, tz, drill_cron, **numbers)
    return create_plan(fields, actor)


def create_plan(fields: PlanFields, actor: Actor) -> Plan:
    """The plan and its two schedules. Raises Refused."""
    problem = plan_problem(fields, None)
    if problem:
        raise Refused(problem)
    with transaction.atomic():
        plan = Plan.objects.create(
            org=fields.source.org,
            source=fields.source,
            name=fields.name.strip(),
            drill_from=fields.drill_from,
            **{n: getattr(fields, n) for n in NUMBERS},
        )
        plan.copies.set(fields.copies)
        set_schedules(plan, fields)
        actor.record("backup-plan-added", plan.org, plan.name, id=plan.pk)
    return plan


def snapshot(plan: Plan) -> dict[str, Any]:
    """The plan as its fields, to tell what a change changed."""
    schedule, drill = plan.schedule, plan.drill_schedule
    return {
        "name": plan.name,
        "source": plan.source_id,
        "copies": sorted(c.pk for c in plan.copies.all()),
        "drill_from": plan.drill_from_id,
        "cron": schedule.cron if schedule else "",
        "tz": schedule.tz if schedule else "UTC",
        "drill_cron": drill.cron if drill else "",
        **{n: getattr(plan, n) for n in NUMBERS},
    }


def change_plan(plan: Plan, fields: PlanFields, actor: Actor) -> list[str]:
    """Apply the change to the plan and its two schedules; the names of what changed.
    Raises Refused."""
    problem = plan_problem(fields, plan)
    if problem:
        raise Refused(problem)
    before = snapshot(plan)
    with transaction.atomic():
        plan.name, plan.source, plan.drill_from = (
            fields.name.strip(),
            fields.source,
            fields.drill_from,
        )
        for n in NUMBERS:
            setattr(plan, n, getattr(fields, n))
        plan.save()
        plan.copies.set(fields.copies)
        set_schedules(plan, fields)
        after = snapshot(plan)
        changed = [n for n in before if before[n] != after[n]]
        actor.record("backup-plan-changed", plan.org, plan.name, id=plan.pk, changed=changed)
    return changed


def set_schedules(plan: Plan, fields: PlanFields) -> None:
    cron, tz, drill = fields.cron.strip(), fields.tz.strip(), fields.drill_cron.strip()
    plan.schedule = set_schedule(
        plan, plan.schedule, "backups.run", f"Backup {plan.name}", cron, tz
    )
    plan.drill_schedule = set_schedule(
        plan, plan.drill_schedule, "backups.drill", f"Restore drill {plan.name}", drill, tz
    )
    plan.save(update_fields=["schedule", "drill_schedule"])


def set_schedule(
    plan: Plan, schedule: Schedule | None, kind: str, name: str, cron: str, tz: str
) -> Schedule:
    if schedule is None:
        return Schedule.objects.create(
            org=plan.org, name=name, kind=kind, payload={"plan": plan.pk}, cron=cron, tz=tz
        )
    if (schedule.cron, schedule.tz) != (cron, tz):
        # The scheduler places a schedule without a next time afresh, without running it.
        schedule.next_run_at = None
    schedule.name, schedule.cron, schedule.tz = name, cron, tz
    schedule.save()
    return schedule


def remove_plan(plan: Plan, actor: Actor) -> None:
    """The plan, its history and its schedules; the snapshots stay in the repositories."""
    pk, name = plan.pk, plan.name
    with transaction.atomic():
        ids = [s for s in (plan.schedule_id, plan.drill_schedule_id) if s]
        plan.delete()
        Schedule.objects.filter(pk__in=ids).delete()
        actor.record("backup-plan-removed", plan.org, name, id=pk)
