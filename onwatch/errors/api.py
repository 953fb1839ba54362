"""Error-tracking projects in the JSON API: list them with their DSN, add one; their
issues: list them by state, resolve or ignore them, merge and split them. Only
parses: services.py decides and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema, Status
from pydantic import Field

from onwatch.core.audit import Actor
from onwatch.core.rest import ERRORS, not_found, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.core.validators import Id, Text
from onwatch.errors import services
from onwatch.errors.models import Issue, Project

projects = Router()


class ProjectOut(Schema):
    id: int
    name: str
    dsn: str | None = Field(description="Give it to the app's Sentry SDK; null: revoked")
    ip_mode: str = Field(description="truncate (the default) or keep")
    hourly_quota: int = Field(description="Events stored an hour at most; more get 429")


class ProjectList(Schema):
    projects: list[ProjectOut]


class ProjectIn(Schema):
    name: Text = Field(max_length=100)


def project_out(p: Project) -> dict[str, Any]:
    return {
        "id": p.pk,
        "name": p.name,
        "dsn": None if p.key_revoked else services.dsn(p),
        "ip_mode": p.ip_mode,
        "hourly_quota": p.hourly_quota,
    }


@operation(projects, "GET", "", "errors:read", response={200: ProjectList, **ERRORS})
def errors_project_list(request: HttpRequest) -> dict[str, Any]:
    """The organization's error-tracking projects by name, with their DSN."""
    found = Project.objects.filter(org=org_of(request))
    return {"projects": [project_out(p) for p in found]}


@operation(projects, "POST", "", "errors:write", response={201: ProjectOut, **ERRORS})
def errors_project_create(request: HttpRequest, body: ProjectIn) -> Status[dict[str, Any]]:
    """Add a project; the answer has the DSN to give the app's SDK."""
    try:
        made = services.add_project(org_of(request), body.name, Actor.of(request))
    except services.Refusal as e:
        raise refuse(str(e)) from None
    return Status(201, project_out(made))


# --- issues: list them by state, change their state, merge and split ----------------------

issues = Router()
ISSUE_LISTING = "/api/v1/errors/issues/"


class IssueOut(Schema):
    id: int
    title: str
    culprit: str
    state: str = Field(description="unresolved, resolved, resolved-next, ignored or merged")
    resolved_in: str = Field(description="the release it was resolved in")
    regressed_in: str = Field(description="the release it came back in after it was resolved")
    event_count: int
    users_affected: int
    first_seen: datetime
    last_seen: datetime
    first_release: str
    last_release: str
    merged_into: int | None


class IssueList(Schema):
    issues: list[IssueOut]


class StateIn(Schema):
    action: Literal["resolve", "resolve-next", "unresolve", "ignore"]
    release: Text = Field("", max_length=200, description="resolve: the release it is fixed in")
    until: datetime | None = Field(None, description="ignore: until this time")
    events: int | None = Field(None, ge=1, description="ignore: until this many more events")
    per_hour: int | None = Field(None, ge=1, description="ignore: until more than this an hour")


class MergeIn(Schema):
    issues: list[Id] = Field(min_length=2, description="the first is kept; the others go into it")


class SplitIn(Schema):
    event_id: Text = Field(max_length=36, description="an event of the group to take out")


def issue_out(i: Issue) -> dict[str, Any]:
    return {n: getattr(i, n) for n in IssueOut.model_fields if n != "merged_into"} | {
        "merged_into": i.merged_into_id
    }


def find_issue(request: HttpRequest, pk: int) -> Issue:
    found = Issue.objects.filter(project__org=org_of(request), pk=pk).first()
    if found is None:
        raise not_found("issue", pk, ISSUE_LISTING)
    return found


@operation(issues, "GET", "", "errors:read", response={200: IssueList, **ERRORS})
def errors_issue_list(
    request: HttpRequest, project: Id | None = None, state: str = "unresolved"
) -> dict[str, Any]:
    """The issues in one state (unresolved by default; `all` for every one but the
    merged), of one project with `?project=<id>`, most recently seen first."""
    from onwatch.errors.issue_views import STATE_FILTERS

    if state not in STATE_FILTERS:
        raise refuse(f"state must be one of: {', '.join(STATE_FILTERS)}")
    found = Issue.objects.filter(project__org=org_of(request), state__in=STATE_FILTERS[state])
    if project is not None:
        if not Project.objects.filter(org=org_of(request), pk=project).exists():
            raise not_found("project", project, "/api/v1/errors/projects/")
        found = found.filter(project_id=project)
    return {"issues": [issue_out(i) for i in found[:1000]]}


@operation(
    issues, "POST", "/{issue_id}/state/", "errors:triage", response={200: IssueOut, **ERRORS}
)
def errors_issue_state(request: HttpRequest, issue_id: Id, body: StateIn) -> dict[str, Any]:
    """Resolve (in a release), resolve in the next release, reopen, or ignore until a
    time, a number of events or a rate an hour."""
    issue = find_issue(request, issue_id)
    until = services.Ignore(body.until, body.events, body.per_hour)
    if body.action == "ignore" and until == services.Ignore():
        raise refuse("ignore needs until, events or per_hour")
    try:
        services.apply(
            [issue],
            body.action,
            Actor.of(request),
            timezone.now(),
            release=body.release,
            until=until,
        )
    except services.Refusal as e:
        raise refuse(str(e)) from None
    issue.refresh_from_db()
    return issue_out(issue)


@operation(issues, "POST", "/merge/", "errors:triage", response={200: IssueOut, **ERRORS})
def errors_issue_merge(request: HttpRequest, body: MergeIn) -> dict[str, Any]:
    """Merge issues into the first: their events move, and their future events land there."""
    found = [find_issue(request, pk) for pk in body.issues]
    try:
        kept = services.merge(found[0], found[1:], Actor.of(request))
    except services.Refusal as e:
        raise refuse(str(e)) from None
    return issue_out(kept)


@operation(
    issues, "POST", "/{issue_id}/split/", "errors:triage", response={200: IssueOut, **ERRORS}
)
def errors_issue_split(request: HttpRequest, issue_id: Id, body: SplitIn) -> dict[str, Any]:
    """Take the group an event was merged in from back out; the answer is that issue."""
    issue = find_issue(request, issue_id)
    event = issue.events.filter(event_id=body.event_id.replace("-", "").lower()).first()
    if event is None:
        raise refuse(f"issue {issue.pk} has no event {body.event_id}")
    try:
        group = services.split(event, Actor.of(request), timezone.now())
    except services.Refusal as e:
        raise refuse(str(e)) from None
    return issue_out(group)
