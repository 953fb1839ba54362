"""Monitors in the JSON API: list with filters, read, create, change, pause, resume, remove.

Only parses: the rules, the writing and the audit entry are services.py's, as for the
form and YAML import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticError

from onwatch.core.audit import Actor
from onwatch.core.decorators import can
from onwatch.core.rest import ERRORS, MAX_LIMIT, not_found, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.core.validators import MAX_ID, Id, Text
from onwatch.uptime import services, specs
from onwatch.uptime.models import Kind, Monitor
from onwatch.uptime.services import Config, MonitorFields, MonitorInput, Refusal

monitors = Router()

KindName = Literal["http", "tcp", "dns", "tls", "heartbeat"]
StateName = Literal["pending", "up", "down", "paused"]
LISTING = "/api/v1/monitors/"


class MonitorOut(Schema):
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    enabled: bool
    interval: int
    retry_interval: int
    timeout: int
    confirmations: int
    slug: str
    policy_id: int | None
    parent_id: int | None
    state: str
    state_since: datetime
    last_checked_at: datetime | None
    last_latency_ms: int | None
    last_error: str
    warning: str = Field(
        description="A problem short of an outage (a certificate about to expire); empty: none"
    )
    ping_url: str | None = Field(description="Where a heartbeat is pinged; null for checks")


class MonitorList(Schema):
    monitors: list[MonitorOut]


class MonitorIn(MonitorFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "shop", "kind": "http", "config": {"url": "https://shop.example.com/"}},
                {"name": "db", "kind": "tcp", "config": {"host": "db.internal", "port": 5432}},
                {"name": "nightly backup", "kind": "heartbeat", "config": {"period": 86400}},
            ]
        }
    )

    policy_id: Id | None = None
    parent_id: Id | None = None


class MonitorPatch(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=100)
    kind: KindName | None = None
    config: Config | None = None
    enabled: bool | None = None
    interval: int | None = None
    retry_interval: int | None = None
    timeout: int | None = None
    confirmations: int | None = None
    slug: Text | None = Field(default=None, max_length=100)
    policy_id: Id | None = None
    parent_id: Id | None = None


class MonitorFilters(Schema):
    kind: KindName | None = None
    state: StateName | None = None
    enabled: bool | None = None
    q: Text | None = Field(default=None, max_length=100, description="part of the name")
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=1_000_000)


def may_write(request: HttpRequest) -> bool:
    """A token that may change monitors sees their settings whole (so GET, edit, PUT
    round-trips); one that may only read gets header values, bodies and URL passwords
    hidden, as the monitor pages show them."""
    scopes: frozenset[str] = getattr(request, "token_scopes", frozenset())
    return "monitors:write" in scopes and can(request, "monitors.manage")


def out(m: Monitor, request: HttpRequest) -> dict[str, Any]:
    ping_url = None
    if m.kind == Kind.HEARTBEAT:
        ping_url = settings.SITE_ROOT + reverse("ping", kwargs={"code": str(m.ping_id)})
    fields = MonitorOut.model_fields.keys() - {"ping_url"}
    shown = {name: getattr(m, name) for name in fields} | {"ping_url": ping_url}
    if not may_write(request):
        shown["config"] = specs.for_readers(m.kind, m.config)
    return shown


def find(request: HttpRequest, pk: int) -> Monitor:
    found = None
    if 1 <= pk <= MAX_ID:
        found = Monitor.objects.filter(org=org_of(request), pk=pk).first()
    if found is None:
        raise not_found("monitor", pk, LISTING)
    return found


@operation(monitors, "GET", "", "monitors:read", response={200: MonitorList, **ERRORS})
def monitor_list(request: HttpRequest, filters: Query[MonitorFilters]) -> dict[str, Any]:
    """The organization's monitors by name; filter by kind, state, enabled or a part of
    the name, page with limit and offset."""
    rows: QuerySet[Monitor] = Monitor.objects.filter(org=org_of(request))
    if filters.kind:
        rows = rows.filter(kind=filters.kind)
    if filters.state:
        rows = rows.filter(state=filters.state)
    if filters.enabled is not None:
        rows = rows.filter(enabled=filters.enabled)
    if filters.q:
        rows = rows.filter(name__icontains=filters.q)
    page = rows.order_by("name", "id")[filters.offset : filters.offset + filters.limit]
    return {"monitors": [out(m, request) for m in page]}


@operation(monitors, "POST", "", "monitors:write", response={201: MonitorOut, **ERRORS})
def monitor_create(request: HttpRequest, body: MonitorIn) -> Status[dict[str, Any]]:
    """Add a monitor. `config` holds the kind's own settings (url, host, port, period...)."""
    data = MonitorInput(body, policy_id=body.policy_id, parent_id=body.parent_id)
    try:
        monitor = services.add_monitor(org_of(request), data, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return Status(201, out(monitor, request))


@operation(monitors, "GET", "{monitor_id}/", "monitors:read", response={200: MonitorOut, **ERRORS})
def monitor_get(request: HttpRequest, monitor_id: int) -> dict[str, Any]:
    return out(find(request, monitor_id), request)


@operation(
    monitors, "PATCH", "{monitor_id}/", "monitors:write", response={200: MonitorOut, **ERRORS}
)
def monitor_update(request: HttpRequest, monitor_id: int, body: MonitorPatch) -> dict[str, Any]:
    """Change the fields given; the others keep their values."""
    monitor = find(request, monitor_id)
    given = body.model_dump(exclude_unset=True)
    own = {name: value for name, value in given.items() if name in MonitorFields.model_fields}
    current = {name: getattr(monitor, name) for name in MonitorFields.model_fields}
    try:
        fields = MonitorFields.model_validate(current | own)
    except PydanticError as e:
        raise refuse(services.sentence(e.errors()[0])[1]) from None
    data = MonitorInput(
        fields,
        policy_id=given.get("policy_id", monitor.policy_id),
        parent_id=given.get("parent_id", monitor.parent_id),
    )
    try:
        services.change_monitor(monitor, data, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return out(monitor, request)


@operation(monitors, "DELETE", "{monitor_id}/", "monitors:write", response={204: None, **ERRORS})
def monitor_delete(request: HttpRequest, monitor_id: int) -> Status[None]:
    """Remove a monitor with its history."""
    services.remove_monitor(find(request, monitor_id), Actor.of(request))
    return Status(204, None)


@operation(
    monitors, "POST", "{monitor_id}/pause/", "monitors:write", response={200: MonitorOut, **ERRORS}
)
def monitor_pause(request: HttpRequest, monitor_id: int) -> dict[str, Any]:
    """Stop checking (or expecting pings); its open incident, if any, is resolved.
    Pausing twice is harmless."""
    monitor = find(request, monitor_id)
    services.pause_monitor(monitor, Actor.of(request))
    return out(monitor, request)


@operation(
    monitors, "POST", "{monitor_id}/resume/", "monitors:write", response={200: MonitorOut, **ERRORS}
)
def monitor_resume(request: HttpRequest, monitor_id: int) -> dict[str, Any]:
    """Check again from now on; a heartbeat waits for its next ping."""
    monitor = find(request, monitor_id)
    services.resume_monitor(monitor, Actor.of(request))
    return out(monitor, request)
