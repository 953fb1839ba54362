"""Error-tracking projects in the JSON API: list them with their DSN, add one. Only
parses: services.py decides and writes."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from onwatch.core.audit import Actor
from onwatch.core.rest import ERRORS, Text, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.errors import services
from onwatch.errors.models import Project

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
