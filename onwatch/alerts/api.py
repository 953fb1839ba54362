"""Escalation policies, incidents and maintenance windows in the JSON API.

The rules are those of the pages (incident_forms.py): a policy has at least one step with
a channel, a maintenance window is one-off (start before end) or recurring (cron, time
zone and duration), and every change is written to the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from onwatch.alerts import incidents as incident_service
from onwatch.alerts.incident_forms import describe_maintenance, describe_policy
from onwatch.alerts.models import (
    Channel,
    EscalationPolicy,
    EscalationStep,
    Incident,
    Maintenance,
)
from onwatch.core import audit
from onwatch.core.crons import validate_schedule, zone
from onwatch.core.models import Organization
from onwatch.core.rest import (
    ERRORS,
    MAX_ID,
    MAX_LIMIT,
    ErrorOut,
    Id,
    Text,
    not_found,
    operation,
    org_of,
)
from onwatch.core.rest import unprocessable as refuse

policies = Router()
incidents = Router()
maintenance = Router()

WEEK_MINUTES = 10080


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


def _channels(org: Organization, ids: list[int]) -> list[Channel]:
    found = {c.pk: c for c in Channel.objects.filter(org=org, pk__in=ids)}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise refuse(f"No channel {missing[0]} in this organization; see /api/v1/channels/")
    return [found[pk] for pk in dict.fromkeys(ids)]


@transaction.atomic
def save_policy(
    org: Organization, policy: EscalationPolicy | None, body: PolicyIn
) -> EscalationPolicy:
    taken = EscalationPolicy.objects.filter(org=org, name__iexact=body.name)
    if policy is not None:
        taken = taken.exclude(pk=policy.pk)
    if taken.exists():
        raise refuse(f"Another policy is already called {body.name!r}; pick another name")
    steps = [(s.after_minutes, _channels(org, s.channel_ids)) for s in body.steps]
    policy = policy or EscalationPolicy(org=org)
    policy.name, policy.repeat_minutes = body.name, body.repeat_minutes
    policy.notify_recovery = body.notify_recovery
    policy.save()
    # Replaced whole and sorted by delay, as the page does: open incidents count steps by
    # position, and the sorted order keeps that meaning.
    policy.steps.all().delete()
    for position, (after, channels) in enumerate(sorted(steps, key=lambda s: s[0])):
        step = EscalationStep.objects.create(policy=policy, position=position, after_minutes=after)
        step.channels.set(channels)
    return policy


def _record_policy(request: HttpRequest, action: str, policy: EscalationPolicy) -> None:
    audit.record(
        action,
        request=request,
        target=policy.name,
        repeat_minutes=policy.repeat_minutes,
        notify_recovery=policy.notify_recovery,
        steps=describe_policy(policy),
    )


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
    policy = save_policy(org_of(request), None, body)
    _record_policy(request, "policy-added", policy)
    return Status(201, policy_out(policy))


@operation(policies, "GET", "{policy_id}/", "policies:read", response={200: PolicyOut, **ERRORS})
def policy_get(request: HttpRequest, policy_id: int) -> dict[str, Any]:
    return policy_out(_policy(request, policy_id))


@operation(policies, "PUT", "{policy_id}/", "policies:write", response={200: PolicyOut, **ERRORS})
def policy_replace(request: HttpRequest, policy_id: int, body: PolicyIn) -> dict[str, Any]:
    """Replace a policy whole, steps included."""
    policy = save_policy(org_of(request), _policy(request, policy_id), body)
    _record_policy(request, "policy-changed", policy)
    return policy_out(policy)


@operation(policies, "DELETE", "{policy_id}/", "policies:write", response={204: None, **ERRORS})
def policy_delete(request: HttpRequest, policy_id: int) -> Status[None]:
    """Remove a policy; monitors and incidents that used it notify every channel instead."""
    policy = _policy(request, policy_id)
    name = policy.name
    policy.delete()
    audit.record("policy-removed", request=request, target=name)
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
    who = request.user.get_username()
    if not incident_service.acknowledge(incident, who, user=request.user):
        return Status(409, {"error": f"This incident is already {incident.state}; nothing to do"})
    audit.record("incident-acknowledged", request=request, target=incident.title, id=incident_id)
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
    incident_service.add_note(incident, request.user.get_username(), body.text)
    audit.record("incident-note-added", request=request, target=incident.title, id=incident_id)
    return Status(201, incident_out(incident, timeline=True))


# --- maintenance windows -----------------------------------------------------------------

# Far enough either way for any real window; beyond, time zone arithmetic can overflow.
EARLIEST, LATEST = 2000, 2200


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

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        if any(len(s) > 200 for s in value):
            raise ValueError("each of 'sources' must be at most 200 characters")
        return sorted({s.strip() for s in value if s.strip()})

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zone(value)
        except ValidationError as e:
            raise ValueError(e.messages[0]) from None
        return value

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _year(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST <= value.year < LATEST:
            raise ValueError(f"times must lie between the years {EARLIEST} and {LATEST}")
        return value

    @model_validator(mode="after")
    def _kind(self) -> MaintenanceIn:
        if self.cron:
            self._recurring()
        else:
            self._once()
        return self

    def _recurring(self) -> None:
        if self.starts_at or self.ends_at:
            raise ValueError(
                "give either 'cron' with 'duration_minutes' or 'starts_at' and 'ends_at'"
            )
        if not self.duration_minutes:
            raise ValueError(
                "'duration_minutes' is required with 'cron': how long each window lasts"
            )
        try:
            validate_schedule(self.cron, self.tz)
        except ValidationError as e:
            raise ValueError(e.messages[0]) from None

    def _once(self) -> None:
        if self.starts_at is None or self.ends_at is None:
            raise ValueError("give 'starts_at' and 'ends_at', or 'cron' with 'duration_minutes'")
        self.starts_at, self.ends_at = self._aware(self.starts_at), self._aware(self.ends_at)
        if self.ends_at <= self.starts_at:
            raise ValueError("'ends_at' must come after 'starts_at'")
        self.duration_minutes = None

    def _aware(self, value: datetime) -> datetime:
        local = value if value.tzinfo else value.replace(tzinfo=zone(self.tz))
        return local.astimezone(UTC)


def maintenance_out(m: Maintenance, now: datetime) -> dict[str, Any]:
    fields = MaintenanceOut.model_fields.keys() - {"active"}
    found = {name: getattr(m, name) for name in fields}
    return found | {"active": incident_service.maintenance_active(m, now)}


def save_maintenance(org: Organization, m: Maintenance | None, body: MaintenanceIn) -> Maintenance:
    m = m or Maintenance(org=org)
    m.name, m.sources, m.tz, m.public = body.name, body.sources, body.tz, body.public
    m.cron, m.duration_minutes = body.cron, body.duration_minutes or 0
    m.starts_at, m.ends_at = body.starts_at, body.ends_at
    m.save()
    return m


def _record_window(request: HttpRequest, action: str, m: Maintenance) -> None:
    audit.record(
        action,
        request=request,
        target=m.name,
        when=describe_maintenance(m),
        sources=m.sources,
        public=m.public,
    )


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
    m = save_maintenance(org_of(request), None, body)
    _record_window(request, "maintenance-added", m)
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
    m = save_maintenance(org_of(request), _window(request, window_id), body)
    _record_window(request, "maintenance-changed", m)
    return maintenance_out(m, timezone.now())


@operation(
    maintenance, "DELETE", "{window_id}/", "maintenance:write", response={204: None, **ERRORS}
)
def maintenance_delete(request: HttpRequest, window_id: int) -> Status[None]:
    """Remove a window; alerts it held go out on the next tick."""
    m = _window(request, window_id)
    name = m.name
    m.delete()
    audit.record("maintenance-removed", request=request, target=name)
    return Status(204, None)
