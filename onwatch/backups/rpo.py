"""RPO now: how much data a disaster would lose at this moment, and the alert when that
is more than the plan's target."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from onwatch.backups.models import Plan
from onwatch.backups.services import good_copy_rows, offsite_copies


def newest_good(plan: Plan) -> datetime | None:
    """When the newest good copy counted for RPO was made: offsite copies where there are
    any (a copy on the same machine does not survive losing it)."""
    repositories = offsite_copies(plan) or list(plan.copies.all())
    copy = (
        good_copy_rows(plan)
        .filter(repository__in=repositories)
        .select_related("run")
        .order_by("-finished_at")
        .first()
    )
    return copy.run.started_at if copy else None


def rpo_now(plan: Plan, now: datetime | None = None) -> timedelta:
    """Age of the data a restore would bring back; since the plan began if never backed up."""
    now = now or timezone.now()
    return now - (newest_good(plan) or plan.created_at)


def check_plan(plan: Plan, now: datetime) -> bool:
    """Alert once per breach; True when an alert went out."""
    from onwatch.alerts.services import raise_alert

    age = rpo_now(plan, now)
    if age <= plan.rpo:
        if plan.rpo_alerted_at is not None:
            Plan.objects.filter(pk=plan.pk).update(rpo_alerted_at=None)
        return False
    if plan.rpo_alerted_at is not None:
        return False
    if Plan.objects.filter(pk=plan.pk, rpo_alerted_at=None).update(rpo_alerted_at=now) != 1:
        return False  # another scheduler alerted first
    title, body = breach_words(plan, age)
    raise_alert(org=plan.org, title=title, body=body, link=reverse("backup_plan", args=[plan.pk]))
    return True


def breach_words(plan: Plan, age: timedelta) -> tuple[str, str]:
    """The alert's title and body: a plan with no good copy at all says so, rather than
    give the age of a copy that does not exist."""
    hours, target = age.total_seconds() / 3600, plan.rpo_minutes / 60
    if newest_good(plan) is None:
        return (
            f"No good backup of {plan.name} yet",
            f"The plan was made {hours:.1f} h ago and has no good copy yet; the target is "
            f"{target:.1f} h. Look at the plan's runs, or back up now.",
        )
    return (
        f"Backups of {plan.name} are older than the RPO target",
        f"The newest good copy is {hours:.1f} h old; the target is {target:.1f} h. "
        "Look at the plan's recent runs.",
    )


def check_all(now: datetime) -> int:
    alerted = 0
    for plan in Plan.objects.select_related("org", "source"):
        alerted += check_plan(plan, now)
    return alerted
