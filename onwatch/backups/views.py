"""Backup plans: the list, one plan's page (RPO, drills, RTO trend, copies, runs,
restores), backing up or drilling now, and adding, changing and removing plans. Sources
and repositories are in setup_views.py, restores in restore_views.py."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from onwatch.backups import charts, services
from onwatch.backups.forms import PlanForm, plan_fields, plan_initial
from onwatch.backups.models import Drill, Outcome, Plan, Repository
from onwatch.backups.services import Actor, Refused, is_offsite, not_offsite
from onwatch.backups.summary import row
from onwatch.core import audit, jobs
from onwatch.core.decorators import can, require
from onwatch.core.models import Organization

RUNS_SHOWN = 30
DRILLS_CHARTED = 60
RESTORES_SHOWN = 20


def _org(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


def _plan(request: HttpRequest, pk: int) -> Plan:
    # Scoped to the member's organization: another organization's plan is a 404.
    return get_object_or_404(
        Plan.objects.select_related("source", "schedule", "drill_schedule"),
        pk=pk,
        org=_org(request),
    )


@require("backups.view")
def plans(request: HttpRequest) -> HttpResponse:
    rows = [row(p) for p in Plan.objects.filter(org=_org(request)).select_related("source")]
    # Append-only copies nobody removes old backups from: they grow for ever.
    unpruned = Repository.objects.filter(org=_org(request), append_only=True, pruned_by="")
    ctx = {"rows": rows, "unpruned": list(unpruned), "can_manage": can(request, "backups.manage")}
    return render(request, "backups/plans.html", ctx)


@require("backups.view")
def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan(request, pk)
    drills = list(plan.drills.select_related("job", "repository")[:DRILLS_CHARTED])
    ctx: dict[str, Any] = {
        "r": row(plan),
        "copies": copies_of(plan),
        "runs": plan.runs.select_related("job").prefetch_related("copies__repository")[:RUNS_SHOWN],
        "drills": drills[:RUNS_SHOWN],
        "restores": plan.restores.select_related("job", "repository")[:RESTORES_SHOWN],
        "chart": rto_chart(plan, drills),
        "can_run": can(request, "backups.run"),
        "can_manage": can(request, "backups.manage"),
        "can_restore": can(request, "backups.restore"),
    }
    return render(request, "backups/plan.html", ctx)


def copies_of(plan: Plan) -> list[tuple[Repository, bool]]:
    return [(c, is_offsite(c, plan.source)) for c in plan.copies.all()]


def rto_chart(plan: Plan, drills: list[Drill]) -> str:
    """Every finished drill is a dot: one that failed before restoring anything too, or
    the chart would look better than the drills went."""
    target = plan.rto_minutes * 60
    points = [
        charts.Point(
            d.started_at,
            d.rto_seconds,
            d.verified and d.rto_seconds is not None and d.rto_seconds <= target,
            d.error,
        )
        for d in drills
        if d.rto_seconds is not None or d.state == Outcome.FAILED
    ]
    return charts.rto_trend(points, target, f"Measured restore time of {plan.name} per drill")


# --- now -----------------------------------------------------------------------------------


@require("backups.run")
@require_POST
def plan_run(request: HttpRequest, pk: int) -> HttpResponse:
    return _start(request, _plan(request, pk), "backups.run", "Backup")


@require("backups.run")
@require_POST
def plan_drill(request: HttpRequest, pk: int) -> HttpResponse:
    return _start(request, _plan(request, pk), "backups.drill", "Restore drill")


def _start(request: HttpRequest, plan: Plan, kind: str, what: str) -> HttpResponse:
    job = jobs.enqueue(kind, {"plan": plan.pk}, org=plan.org)
    audit.record(f"{kind.replace('.', '-')}-started", request=request, target=plan.name, job=job.pk)
    messages.success(request, f"{what} of {plan.name} started; this page shows how it goes.")
    return redirect("job_detail", pk=job.pk)


# --- adding and changing -------------------------------------------------------------------


@require("backups.manage")
def plan_add(request: HttpRequest) -> HttpResponse:
    return _plan_form(request, None)


@require("backups.manage")
def plan_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _plan_form(request, _plan(request, pk))


def _plan_form(request: HttpRequest, plan: Plan | None) -> HttpResponse:
    org = _org(request)
    data = request.POST if request.method == "POST" else None
    initial = plan_initial(plan) if plan is not None else None
    form = PlanForm(data, org=org, plan=plan, initial=initial)
    if data is not None and form.is_valid():
        try:
            saved = save_plan(request, plan, plan_fields(form.cleaned_data))
        except Refused as e:
            form.add_error(None, str(e))
            return render(request, "backups/plan_form.html", plan_form_context(form, plan))
        messages.success(request, f"Plan {saved.name} saved.")
        if not_offsite(saved):
            messages.warning(
                request,
                f"{saved.name} has no offsite copy: a fire or an account closed at "
                f"{saved.source.provider or 'the source'} would take every copy with it. "
                "Add a repository somewhere else.",
            )
        return redirect("backup_plan", pk=saved.pk)
    return render(request, "backups/plan_form.html", plan_form_context(form, plan))


def plan_form_context(form: PlanForm, plan: Plan | None) -> dict[str, Any]:
    return {
        "form": form,
        "plan": plan,
        "has_sources": form.fields["source"].queryset.exists(),  # type: ignore[attr-defined]
        "has_repositories": form.fields["copies"].queryset.exists(),  # type: ignore[attr-defined]
    }


def save_plan(request: HttpRequest, plan: Plan | None, fields: services.PlanFields) -> Plan:
    """Raises services.Refused."""
    actor = Actor.of(request)
    if plan is None:
        return services.create_plan(fields, actor)
    services.change_plan(plan, fields, actor)
    return plan


@require("backups.manage")
@require_POST
def plan_delete(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan(request, pk)
    name = plan.name
    services.remove_plan(plan, Actor.of(request))
    messages.success(
        request, f"Plan {name} removed, with its history. Its backups stay in the repositories."
    )
    return redirect("backups")
