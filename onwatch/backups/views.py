from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from onwatch.backups.models import Plan
from onwatch.backups.summary import row
from onwatch.core.decorators import require

RUNS_SHOWN = 30


@require("backups.view")
def plans(request: HttpRequest) -> HttpResponse:
    rows = [row(p) for p in Plan.objects.filter(org=request.org).select_related("source")]  # type: ignore[attr-defined]
    return render(request, "backups/plans.html", {"rows": rows})


@require("backups.view")
def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan.objects.select_related("source"), pk=pk, org=request.org)  # type: ignore[attr-defined]
    ctx = {
        "r": row(plan),
        "copies": plan.copies.all(),
        "runs": plan.runs.select_related("job").prefetch_related("copies__repository")[:RUNS_SHOWN],
        "drills": plan.drills.select_related("job", "repository")[:RUNS_SHOWN],
    }
    return render(request, "backups/plan.html", ctx)
