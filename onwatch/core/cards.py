"""Core's own dashboard cards: members, background jobs and the audit log."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from onwatch.core.dashboard import Card, add_card
from onwatch.core.models import AuditEntry, Job, Membership, Organization


def _jobs(org: Organization) -> QuerySet[Job]:
    # The organization's own and the installation's (org=None: housekeeping).
    return Job.objects.filter(org=org) | Job.objects.filter(org=None)


def members(org: Organization) -> dict[str, Any]:
    return {"members": Membership.objects.filter(org=org).count()}


def job_states(org: Organization) -> dict[str, Any]:
    counts = _jobs(org).values_list("state").annotate(n=Count("id")).values_list("state", "n")
    return {"job_states": dict(counts)}


def recent_jobs(org: Organization) -> dict[str, Any]:
    return {"recent_jobs": _jobs(org).order_by("-created_at", "-id")[:5]}


def recent_audit(org: Organization) -> dict[str, Any]:
    return {"audit": AuditEntry.objects.filter(org=org)[:5]}


def register() -> None:
    add_card(Card("core.members", "", "core/cards/members.html", members, 20, "top"))
    add_card(Card("core.job_states", "", "core/cards/job_states.html", job_states, 30, "top"))
    add_card(Card("core.jobs", "Recent background jobs", "core/cards/jobs.html", recent_jobs, 40))
    add_card(
        Card(
            "core.audit",
            "Latest audit entries",
            "core/cards/audit.html",
            recent_audit,
            50,
            permission="audit.view",
        )
    )
