"""Escalation policies, incidents and maintenance windows in the JSON API.

The schemas here only parse; the rules and the audit entry are the services' (services.py),
the very ones the pages use: a policy has at least one step with a channel, a maintenance
window is one-off (start before end) or recurring (cron, time zone and duration).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import BaseModel, ConfigDict, model_validator

from onwatch.alerts import incidents as incident_service
from onwatch.alerts import services
from onwatch.alerts.models import EscalationPolicy, Incident, Maintenance
from onwatch.core.audit import Actor
from onwatch.core.rest import ERRORS, MAX_LIMIT, ErrorOut, not_found, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.core.validators import MAX_ID, Id, Text

policies = Router()
incidents = Router()
maintenance = Router()

WEEK_MINUTES = services.WEEK_MINUTES


def refused(e: services.Refused) -> HttpError:
    """The services' own message, led by the field it is about as the API's errors are."""
    return refuse(f"'{e.field}': {e}" if e.field else str(e))


class Page(Schema):
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=1_000_000)


def _find[M: (EscalationPolicy, Incident, Maintenance)](
    rows: QuerySet[M], request: HttpRequest, pk: int, what: str, listing: str
) -> M:
    found = rows.filter(org=org_of(request), pk=pk).first() if 1 <= pk <= MAX_ID else None
    if found is None:
        raise not_found(what, pk, listing)
    return found


# --- escalation policies -----------------------------------------------------------------


class StepOut(Schema):
    after_minutes: int
    channel_ids: list[int]


class PolicyOut(Schema):
    id: int
    name: str
    repeat_minutes: int
    notify_recovery: bool
    steps: list[StepOut]


class PolicyList(Schema):
    policies: list[PolicyOut]


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_minutes: int = Field(ge=0, le=WEEK_MINUTES, description="unacknowledged this long")
    channel_ids: list[Id] = Field(min_length=1, max_length=50)


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text = Field(min_length=1, max_length=100)
    repeat_minutes: int = Field(default=0, ge=0, le=WEEK_MINUTES, description="0: no reminders")
    notify_recovery: bool = True
    steps: list[StepIn] = Field(
        min_length=1, max_length=20, description="at least one: a policy without steps tells nobody"
    )


def policy_out(p: EscalationPolicy) -> dict[str, Any]:
    steps = [
        {"after_minutes": s.after_minutes, "channel_ids": sorted(c.pk for c in s.channels.all())}
        for s in p.steps.all()
    ]
    return {
        "id": p.pk,
        "name": p.name,
        "repeat_minutes": p.repeat_minutes,
        "notify_recovery": p.notify_recovery,
        "steps": steps,
    }


def policy_spec(body: PolicyIn) -> services.PolicySpec:
    steps = tuple(services.StepSpec(s.after_minutes, tuple(s.channel_ids)) for s in body.steps)
    return services.PolicySpec(body.name, body.repeat_minutes, body.notify_recovery, steps)


def save_policy(
    request: HttpRequest, policy: EscalationPolicy | None, body: PolicyIn
) -> EscalationPolicy:
    try:
        return services.save_policy(org_of(request), policy, policy_spec(body), Actor.of(request))
    except services.Refused as e:
        raise refused(e) from None


def _policy(request: HttpRequest, pk: int) -> EscalationPolicy:
    rows = EscalationPolicy.objects.prefetch_related("steps__channels")
    return _find(rows, request, pk, "escalation policy", "/api/v1/policies/")


@operation(policies, "GET", "", "policies:read", response={200: PolicyList, **ERRORS})
def policy_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    rows = EscalationPolicy.objects.filter(org=org_of(request)).prefetch_related("steps__channels")
    chosen = rows.order_by("name", "id")[page.offset : page.offset + page.limit]
    return {"policies": [policy_out(p) for p in chosen]}


@operation(policies, "POST", "", "policies:write", response={201: PolicyOut, **ERRORS})
def policy_create(request: HttpRequest, body: PolicyIn) -> Status[dict[str, Any]]:
    """Add a policy: ordered steps (which channels, after how many minutes unacknowledged),
    reminders, and whether a recovery notice goes out."""
    return Status(201, policy_out(save_policy(request, None, body)))


@operation(policies, "GET", "{policy_id}/", "policies:read", response={200: PolicyOut, **ERRORS})
def policy_get(request: HttpRequest, policy_id: int) -> dict[str, Any]:
    return policy_out(_policy(request, policy_id))


@operation(policies, "PUT", "{policy_id}/", "policies:write", response={200: PolicyOut, **ERRORS})
def policy_replace(request: HttpRequest, policy_id: int, body: PolicyIn) -> dict[str, Any]:
    """Replace a policy whole, steps included."""
    return policy_out(save_policy(request, _policy(request, policy_id), body))


@operation(policies, "DELETE", "{policy_id}/", "policies:write", response={204: None, **ERRORS})
def policy_delete(request: HttpRequest, policy_id: int) -> Status[None]:
    """Remove a policy; monitors and incidents that used it notify every channel instead."""
    services.remove_policy(_policy(request, policy_id), Actor.of(request))
    return Status(204, None)


# --- incidents ---------------------------------------------------------------------------


class EventOut(Schema):
    at: datetime
    kind: str
    text: str
    actor: str


class IncidentOut(Schema):
    id: int
    title: str
    source: str
    state: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    held: str = Field(description="why alerts are held back; empty when they are not")
    policy_id: int | None
    evidence: dict[str, Any]


class IncidentDetail(IncidentOut):
    timeline: list[EventOut]


class IncidentList(Schema):
    incidents: list[IncidentOut]


class IncidentFilters(Page):
    state: Literal["open", "acknowledged", "resolved"] | None = None


class NoteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"text": "Restarted the pool; watching it."}]},
    )

    text: Text = Field(min_length=1, max_length=4000)


def incident_out(i: Incident, timeline: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        name: getattr(i, name) for name in IncidentOut.model_fields.keys() - {"acknowledged_by"}
    }
    found["acknowledged_by"] = i.acknowledged_by.get_username() if i.acknowledged_by else None
    if timeline:
        found["timeline"] = [
            {"at": e.at, "kind": e.kind, "text": e.text, "actor": e.actor} for e in i.events.all()
        ]
    return found


def _incident(request: HttpRequest, pk: int) -> Incident:
    rows = Incident.objects.select_related("acknowledged_by")
    return _find(rows, request, pk, "incident", "/api/v1/incidents/")


@operation(incidents, "GET", "", "incidents:read", response={200: IncidentList, **ERRORS})
def incident_list(request: HttpRequest, filters: Query[IncidentFilters]) -> dict[str, Any]:
    """Newest first; filter by state."""
    rows = Incident.objects.filter(org=org_of(request)).select_related("acknowledged_by")
    if filters.state:
        rows = rows.filter(state=filters.state)
    chosen = rows.order_by("-opened_at", "-id")[filters.offset : filters.offset + filters.limit]
    return {"incidents": [incident_out(i) for i in chosen]}


@operation(
    incidents, "GET", "{incident_id}/", "incidents:read", response={200: IncidentDetail, **ERRORS}
)
def incident_get(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    """One incident with its timeline, oldest event first."""
    return incident_out(_incident(request, incident_id), timeline=True)


@operation(
    incidents,
    "POST",
    "{incident_id}/acknowledge/",
    "incidents:write",
    response={200: IncidentDetail, 409: ErrorOut, **ERRORS},
)
def incident_acknowledge(request: HttpRequest, incident_id: int) -> Status[dict[str, Any]]:
    """Someone is on it: escalation and reminders stop. 409 unless it is open."""
    incident = _incident(request, incident_id)
    try:
        services.acknowledge_incident(incident, Actor.of(request))
    except services.Refused as e:
        return Status(409, {"error": str(e)})
    return Status(200, incident_out(incident, timeline=True))


@operation(
    incidents,
    "POST",
    "{incident_id}/notes/",
    "incidents:write",
    response={201: IncidentDetail, **ERRORS},
)
def incident_note(request: HttpRequest, incident_id: int, body: NoteIn) -> Status[dict[str, Any]]:
    """Add a note to the timeline."""
    incident = _incident(request, incident_id)
    try:
        services.add_incident_note(incident, body.text, Actor.of(request))
    except services.Refused as e:
        raise refused(e) from None
    return Status(201, incident_out(incident, timeline=True))


# --- maintenance windows -----------------------------------------------------------------


class MaintenanceOut(Schema):
    id: int
    name: str
    sources: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    cron: str
    tz: str
    duration_minutes: int
    public: bool
    active: bool = Field(description="whether the window holds alerts back right now")


class MaintenanceList(Schema):
    windows: list[MaintenanceOut]


class MaintenanceIn(BaseModel):
    """One-off (starts_at and ends_at) or recurring (cron and duration_minutes). Times
    without an offset are read in `tz`."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "db upgrade",
                    "starts_at": "2030-01-01T22:00",
                    "ends_at": "2030-01-01T23:00",
                },
                {"name": "Sunday backups", "cron": "0 2 * * 0", "duration_minutes": 60},
            ]
        },
    )

    name: Text = Field(min_length=1, max_length=100)
    sources: list[Text] = Field(
        default_factory=list,
        max_length=200,
        description="incident sources covered, e.g. uptime.monitor:42; empty: everything",
    )
    tz: Text = Field(default="UTC", max_length=60)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cron: Text = Field(default="", max_length=100)
    duration_minutes: int | None = Field(default=None, ge=1, le=WEEK_MINUTES)
    public: bool = Field(default=True, description="shown on the status page")

    @model_validator(mode="after")
    def _kind(self) -> MaintenanceIn:
        if self.cron and (self.starts_at or self.ends_at):
            raise ValueError(
                "give either 'cron' with 'duration_minutes' or 'starts_at' and 'ends_at'"
            )
        return self

    def spec(self) -> services.MaintenanceSpec:
        return services.MaintenanceSpec(
            name=self.name,
            recurring=bool(self.cron),
            tz=self.tz,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            cron=self.cron,
            duration_minutes=self.duration_minutes or 0,
            sources=tuple(self.sources),
            public=self.public,
        )


def maintenance_out(m: Maintenance, now: datetime) -> dict[str, Any]:
    fields = MaintenanceOut.model_fields.keys() - {"active"}
    found = {name: getattr(m, name) for name in fields}
    return found | {"active": incident_service.maintenance_active(m, now)}


def save_maintenance(
    request: HttpRequest, m: Maintenance | None, body: MaintenanceIn
) -> Maintenance:
    try:
        return services.save_maintenance(org_of(request), m, body.spec(), Actor.of(request))
    except services.Refused as e:
        raise refused(e) from None


def _window(request: HttpRequest, pk: int) -> Maintenance:
    return _find(
        Maintenance.objects.all(), request, pk, "maintenance window", "/api/v1/maintenance/"
    )


@operation(maintenance, "GET", "", "maintenance:read", response={200: MaintenanceList, **ERRORS})
def maintenance_list(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    """Newest first."""
    now = timezone.now()
    rows = Maintenance.objects.filter(org=org_of(request)).order_by("-created_at", "-id")
    return {
        "windows": [maintenance_out(m, now) for m in rows[page.offset : page.offset + page.limit]]
    }


@operation(maintenance, "POST", "", "maintenance:write", response={201: MaintenanceOut, **ERRORS})
def maintenance_create(request: HttpRequest, body: MaintenanceIn) -> Status[dict[str, Any]]:
    """Plan a window in which alerts are held back."""
    m = save_maintenance(request, None, body)
    return Status(201, maintenance_out(m, timezone.now()))


@operation(
    maintenance, "GET", "{window_id}/", "maintenance:read", response={200: MaintenanceOut, **ERRORS}
)
def maintenance_get(request: HttpRequest, window_id: int) -> dict[str, Any]:
    return maintenance_out(_window(request, window_id), timezone.now())


@operation(
    maintenance,
    "PUT",
    "{window_id}/",
    "maintenance:write",
    response={200: MaintenanceOut, **ERRORS},
)
def maintenance_replace(
    request: HttpRequest, window_id: int, body: MaintenanceIn
) -> dict[str, Any]:
    """Replace a window whole."""
    m = save_maintenance(request, _window(request, window_id), body)
    return maintenance_out(m, timezone.now())


@operation(
    maintenance, "DELETE", "{window_id}/", "maintenance:write", response={204: None, **ERRORS}
)
def maintenance_delete(request: HttpRequest, window_id: int) -> Status[None]:
    """Remove a window; alerts it held go out on the next tick."""
    services.remove_maintenance(_window(request, window_id), Actor.of(request))
    return Status(204, None)
