"""Projects (their DSN, what was refused, what SDKs dropped, sessions per release) and
issues (list and detail). Thin: every change goes through services.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.rest import org_of
from onwatch.errors import services
from onwatch.errors.models import IpMode, Issue, Project, Tally

ISSUES_SHOWN = 200
DAYS_COUNTED = 7


def _project(request: HttpRequest, pk: int) -> Project:
    # Scoped to the member's organization: another organization's project is a 404.
    return get_object_or_404(Project, pk=pk, org=org_of(request))


@require("errors.view")
def project_list(request: HttpRequest) -> HttpResponse:
    projects = Project.objects.filter(org=org_of(request))
    ctx = {"projects": projects, "can_manage": can(request, "errors.manage")}
    return render(request, "errors/projects.html", ctx)


@require("errors.manage")
def project_add(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            made = services.add_project(
                org_of(request), request.POST.get("name", ""), Actor.of(request)
            )
        except services.Refusal as e:
            messages.error(request, str(e))
        else:
            messages.success(request, f"Added {made.name}. Give its DSN to the app's SDK.")
            return redirect("errors_project", pk=made.pk)
    return render(request, "errors/project_add.html", {})


def tallies(project: Project, since: Any) -> dict[str, list[tuple[str, int]]]:
    rows = (
        Tally.objects.filter(project=project, hour__gte=since)
        .exclude(what__in=["refused", "stored"])
        .values("what", "detail")
        .annotate(total=Sum("count"))
        .order_by("what", "-total")
    )
    found: dict[str, list[tuple[str, int]]] = {}
    for r in rows:
        found.setdefault(r["what"], []).append((r["detail"], int(r["total"])))
    return found


def crash_free(counted: dict[str, list[tuple[str, int]]]) -> list[dict[str, Any]]:
    crashed = dict(counted.get("crashed", []))
    rows = []
    for release, started in counted.get("sessions", []):
        lost = crashed.get(release, 0)
        rate = 100.0 * (started - lost) / started if started else 100.0
        rows.append(
            {"release": release or "(none)", "started": started, "crashed": lost, "rate": rate}
        )
    return rows


@require("errors.view")
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    now = timezone.now()
    counted = tallies(project, services.hour_of(now) - timedelta(days=DAYS_COUNTED))
    ctx = {
        "project": project,
        "dsn": services.dsn(project),
        "refused": services.refused_last_hour(project, now),
        "refused_since": services.hour_of(now) - timedelta(hours=1),
        "dropped": counted.get("sdk-dropped", []),
        "check_ins": counted.get("check-ins", []),
        "transactions": sum(n for _, n in counted.get("transactions", [])),
        "sessions": crash_free(counted),
        "days": DAYS_COUNTED,
        "can_manage": can(request, "errors.manage"),
        "ip_modes": IpMode.choices,
        **issue_list(request, project),
    }
    return render(request, "errors/project.html", ctx)


def issue_list(request: HttpRequest, project: Project) -> dict[str, Any]:
    """The project's issues in the state asked for (?state=, unresolved by default), with
    how many there are in each, and what the list's bulk actions need."""
    from onwatch.deploys import services as deploys
    from onwatch.errors.issue_views import STATE_FILTERS

    shown = request.GET.get("state", "")
    shown = shown if shown in STATE_FILTERS else "unresolved"
    issues = Issue.objects.filter(project=project)
    counted = dict(issues.values_list("state").annotate(n=Count("id")).order_by())
    return {
        # Each row's state names the rule of its project (linked to a service or not).
        "issues": issues.filter(state__in=STATE_FILTERS[shown]).select_related("project")[
            :ISSUES_SHOWN
        ],
        "shown": shown,
        "filters": [
            (name, sum(counted.get(s, 0) for s in states)) for name, states in STATE_FILTERS.items()
        ],
        "can_triage": can(request, "errors.triage"),
        "service_choices": deploys.service_choices(project.org),
    }


@require("errors.manage")
@require_POST
def project_settings(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    quota = request.POST.get("hourly_quota", "")
    try:
        if not quota.isdigit():
            raise services.Refusal("The hourly quota must be a whole number of events")
        services.change_project(
            project, request.POST.get("ip_mode", ""), int(quota), Actor.of(request)
        )
    except services.Refusal as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Saved. Events from now on follow these settings.")
    return redirect("errors_project", pk=project.pk)


@require("errors.manage")
@require_POST
def project_rotate_key(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    services.rotate_key(project, Actor.of(request))
    messages.success(
        request, "New DSN made; the old one no longer works. Give the new one to the app."
    )
    return redirect("errors_project", pk=project.pk)


@require("errors.manage")
@require_POST
def project_revoke_key(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    services.revoke_key(project, Actor.of(request))
    messages.success(request, "The DSN no longer works; events sent with it are refused.")
    return redirect("errors_project", pk=project.pk)


def in_app_first(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames, innermost first (where it happened), the app's own before libraries'."""
    ordered = [shown(f) for f in reversed(frames)]
    return [f for f in ordered if f["in_app"]] + [f for f in ordered if not f["in_app"]]


def shown(frame: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a frame, every field present (SDKs leave out what they lack)."""
    return {
        "where": str(frame.get("module") or frame.get("filename") or frame.get("abs_path") or "?"),
        "function": str(frame.get("function") or "?"),
        "lineno": frame.get("lineno") if isinstance(frame.get("lineno"), int) else None,
        "context_line": str(frame.get("context_line") or ""),
        "in_app": frame.get("in_app") is True,
    }


def crumbs_of(data: dict[str, Any]) -> list[str]:
    found = data.get("breadcrumbs")
    values = found.get("values") if isinstance(found, dict) else found
    if not isinstance(values, list):
        return []
    return [
        " ".join(str(c.get(k) or "") for k in ("timestamp", "category", "message")).strip()
        for c in values
        if isinstance(c, dict)
    ]


def request_line(data: dict[str, Any]) -> str:
    found = data.get("request")
    if not isinstance(found, dict):
        return ""
    return f"{found.get('method') or ''} {found.get('url') or ''}".strip()


def stack_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    from onwatch.errors.grouping import exceptions, frames

    return [
        {
            "type": str(e.get("type") or "Error"),
            "value": str(e.get("value") or ""),
            "frames": in_app_first(frames(e)),
        }
        for e in reversed(exceptions(event))
    ]


@require("errors.view")
def issue_detail(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue, pk=pk, project__org=org_of(request))
    latest = issue.events.first()
    data: dict[str, Any] = latest.data if latest is not None else {}
    ctx = {
        "issue": issue,
        "can_triage": can(request, "errors.triage"),
        "merged_groups": merged_groups(issue),
        "event": latest,
        "exceptions": stack_of(data),
        "breadcrumbs": crumbs_of(data),
        "request_line": request_line(data),
        "tags": _pairs(data.get("tags")),
        "user": _pairs(data.get("user")),
    }
    return render(request, "errors/issue.html", ctx)


def merged_groups(issue: Issue) -> list[tuple[Issue, int]]:
    """The issues merged into this one, each with one of its events (to split it out by)."""
    found = []
    for group in Issue.objects.filter(merged_into=issue):
        event = issue.events.filter(merged_from=group).values_list("pk", flat=True).first()
        if event is not None:
            found.append((group, event))
    return found


def _pairs(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [(str(p[0]), str(p[1])) for p in value if isinstance(p, list) and len(p) == 2]
    return []
