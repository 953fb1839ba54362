"""What people do with issues from their pages: resolve, ignore, reopen (one issue or
several from the list), merge several into one, split a merged group back out, and the
project's alert settings. Thin: services.py decides and writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from onwatch.core.audit import Actor
from onwatch.core.decorators import require
from onwatch.core.rest import org_of
from onwatch.errors import services
from onwatch.errors.models import Event, Issue, IssueState, Project

# The issue list's filters: which states each shows (unresolved by default).
STATE_FILTERS = {
    "unresolved": [IssueState.UNRESOLVED],
    "resolved": [IssueState.RESOLVED, IssueState.RESOLVED_NEXT],
    "ignored": [IssueState.IGNORED],
    "all": [
        IssueState.UNRESOLVED,
        IssueState.RESOLVED,
        IssueState.RESOLVED_NEXT,
        IssueState.IGNORED,
    ],
}

DONE = {
    "resolve": "Resolved",
    "resolve-next": "Resolved in the next release",
    "unresolve": "Reopened",
    "ignore": "Ignored",
}


def _number(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise services.Refusal(f"{what} must be a whole number")
    return int(text)


def _time(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise services.Refusal("Give the time as YYYY-MM-DD HH:MM (UTC)") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def ignore_of(request: HttpRequest) -> services.Ignore:
    """Until what an ignored issue stays ignored, as the form says; refused when it says
    nothing (ignoring for ever hides trouble: choose a condition)."""
    post = request.POST
    until = services.Ignore(
        until=_time(post.get("until", "")),
        events=_number(post.get("events", ""), "The number of events"),
        per_hour=_number(post.get("per_hour", ""), "The number of events an hour"),
    )
    if until == services.Ignore():
        raise services.Refusal(
            "Say until when to ignore it: a time, a number of events, or a rate an hour"
        )
    return until


def _apply(request: HttpRequest, issues: list[Issue], action: str) -> int:
    how: dict[str, Any] = {"release": request.POST.get("release", "")}
    if action == "ignore":
        how["until"] = ignore_of(request)
    return services.apply(issues, action, Actor.of(request), timezone.now(), **how)


@require("errors.triage")
@require_POST
def issue_state(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue, pk=pk, project__org=org_of(request))
    action = request.POST.get("action", "")
    try:
        _apply(request, [issue], action)
    except services.Refusal as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{DONE[action]}.")
    return redirect("errors_issue", pk=issue.pk)


@require("errors.triage")
@require_POST
def issues_bulk(request: HttpRequest, pk: int) -> HttpResponse:
    """The list's bulk actions on the ticked issues; "merge" keeps the first ticked."""
    project = get_object_or_404(Project, pk=pk, org=org_of(request))
    ids = [int(i) for i in request.POST.getlist("issue") if i.isdigit() and len(i) < 10]
    chosen = list(Issue.objects.filter(project=project, pk__in=ids).order_by("-event_count"))
    action = request.POST.get("action", "")
    shown = request.POST.get("shown", "")
    query = f"?state={shown}" if shown in STATE_FILTERS else ""
    back = redirect(reverse("errors_project", args=[project.pk]) + query)
    if not chosen:
        messages.error(request, "Tick the issues to change first.")
        return back
    try:
        if action == "merge":
            kept = services.merge(chosen[0], chosen[1:], Actor.of(request))
            messages.success(request, f"Merged {len(chosen)} issues into {kept.title}.")
        else:
            n = _apply(request, chosen, action)
            messages.success(request, f"{DONE[action]}: {n} issue{'s' if n != 1 else ''}.")
    except services.Refusal as e:
        messages.error(request, str(e))
    return back


@require("errors.triage")
@require_POST
def issue_split(request: HttpRequest, pk: int) -> HttpResponse:
    issue = get_object_or_404(Issue, pk=pk, project__org=org_of(request))
    event_id = request.POST.get("event", "")
    event = get_object_or_404(Event, pk=event_id if event_id.isdigit() else 0, issue=issue)
    try:
        group = services.split(event, Actor.of(request), timezone.now())
    except services.Refusal as e:
        messages.error(request, str(e))
        return redirect("errors_issue", pk=issue.pk)
    messages.success(request, f"Split out: {group.title} is an issue of its own again.")
    return redirect("errors_issue", pk=group.pk)


@require("errors.manage")
@require_POST
def project_alerts(request: HttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=pk, org=org_of(request))
    post = request.POST
    try:
        events = _number(post.get("volume_events", ""), "The number of events") or 0
        minutes = _number(post.get("volume_minutes", ""), "The minutes") or 0
        service = _number(post.get("service", ""), "The service")
        services.change_alerts(
            project,
            "new_issues" in post,
            "regressions" in post,
            events,
            minutes,
            Actor.of(request),
        )
        if service != project.service_id:
            services.link_service(project, service, Actor.of(request))
    except services.Refusal as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Saved.")
    return redirect("errors_project", pk=project.pk)
