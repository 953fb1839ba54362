"""Monitors and status pages: the one place that creates, changes and removes them, and
what other apps (the dashboard) read about monitors.

The form, the API, YAML import and `onwatch monitors import` only parse what they are given
into a MonitorInput (or StatusPageInput) and call these functions with the actor. The rules
(valid settings, unique names and slugs, no circular dependencies, what a change does to
the checks) and the audit entry live here once, so every surface writes the same rows and
the same entry for the same change.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.db import models, transaction
from django.db.models import Count
from django.utils import timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import ErrorDetails

from onwatch.alerts.services import policy_of, unresolved_incident_count
from onwatch.core import audit
from onwatch.core.audit import Actor
from onwatch.core.models import Organization
from onwatch.core.validators import Text, plain_json
from onwatch.uptime import heartbeats, specs, state
from onwatch.uptime.models import Kind, Monitor, State, StatusPage, StatusPageItem

DOWN_SHOWN = 10

# --- what other apps read -------------------------------------------------------------------


def state_counts(org: Organization) -> dict[str, int]:
    rows = Monitor.objects.filter(org=org).values_list("state").annotate(n=Count("id"))
    counts = dict.fromkeys(State.values, 0)
    counts.update({str(s): n for s, n in rows.values_list("state", "n")})
    return counts


def summary(org: Organization) -> dict[str, Any]:
    """From the monitors' state columns and the incidents, never from check results."""
    counts = state_counts(org)
    down = Monitor.objects.filter(org=org, state=State.DOWN).order_by("state_since", "id")
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "down": list(down.only("id", "name", "state_since")[:DOWN_SHOWN]),
        # Not outages, but people must hear of them: a certificate about to expire.
        "warnings": list(
            Monitor.objects.filter(org=org)
            .exclude(warning="")
            .order_by("name", "id")
            .only("id", "name", "warning", "cert_expires_at")[:DOWN_SHOWN]
        ),
        "open_incidents": unresolved_incident_count(org, "uptime."),
    }


# --- the typed input ------------------------------------------------------------------------

# The bounds of the monitor form's fields too, so every surface accepts the same.
MIN_INTERVAL = 20
MIN_RETRY = 10
DAY = 86400
MAX_TIMEOUT = 120
MAX_CONFIRMATIONS = 10
SLUG = r"^[A-Za-z0-9_-]*$"  # as the ping URLs accept (uptime/urls.py)


def default_of(name: str) -> Any:
    found = Monitor._meta.get_field(name)
    assert isinstance(found, models.Field)
    return found.default


Config = Annotated[dict[str, Any], AfterValidator(plain_json)]


class MonitorFields(BaseModel):
    """A monitor's own settings; `config` is checked per kind by specs.validate."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text = Field(min_length=1, max_length=100)
    kind: Literal["http", "tcp", "dns", "tls", "heartbeat"]
    config: Config = Field(default_factory=dict)
    enabled: bool = True
    interval: int = Field(default=default_of("interval"), ge=MIN_INTERVAL, le=DAY)
    retry_interval: int = Field(default=default_of("retry_interval"), ge=MIN_RETRY, le=DAY)
    timeout: int = Field(default=default_of("timeout"), ge=1, le=MAX_TIMEOUT)
    confirmations: int = Field(default=default_of("confirmations"), ge=1, le=MAX_CONFIRMATIONS)
    slug: Text = Field(default="", max_length=100, pattern=SLUG)

    @model_validator(mode="after")
    def _consistent(self) -> MonitorFields:
        if self.timeout >= self.interval:
            raise ValueError("'timeout' must be shorter than 'interval', the time between checks")
        if self.slug and self.kind != "heartbeat":
            raise ValueError("'slug' is for heartbeats only (pinged at /ping/<key>/<slug>/)")
        return self


OWN = tuple(MonitorFields.model_fields)


@dataclass(frozen=True)
class MonitorInput:
    """Everything one may set on a monitor, as every surface hands it over. The policy and
    the parent are named by id and looked up here, in the monitor's organization."""

    fields: MonitorFields
    policy_id: int | None = None
    parent_id: int | None = None
    # Only YAML import sets it: a restored or moved installation keeps its ping URLs.
    ping_id: uuid.UUID | None = None


class Refusal(ValueError):
    """A monitor or status page cannot be saved like this; the message is for people,
    `field` names the setting at fault (forms put the message there, YAML at its line)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def sentence(error: ErrorDetails | dict[str, Any]) -> tuple[str, str]:
    """A pydantic error of MonitorFields as (field, one sentence for people)."""
    loc = [str(p) for p in error.get("loc", ())]
    name = ".".join(loc)
    kind = error.get("type")
    if kind == "missing":
        return name, f"'{name}' is required"
    if kind == "extra_forbidden":
        return name, f"'{name}' is not a setting of a monitor; remove it"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "value_error" and "'" in message:
        # Our validators name the field themselves; the first name is the one at fault.
        named = re.match(r"'(\w+)'", message)
        return name or (named.group(1) if named else ""), message
    return name, f"'{name or 'monitor'}' is not valid: {message[:1].lower()}{message[1:]}"


# --- the rules ------------------------------------------------------------------------------


def check_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return specs.validate(kind, config)
    except specs.SpecError as e:
        raise Refusal(str(e), "config") from None


def check_unique(org: Organization, fields: MonitorFields, monitor: Monitor | None) -> None:
    others = Monitor.objects.filter(org=org)
    if monitor is not None:
        others = others.exclude(pk=monitor.pk)
    # Only a new name must be free: two monitors that already share one stay editable.
    renamed = monitor is None or monitor.name != fields.name
    if renamed and others.filter(name=fields.name).exists():
        raise Refusal(
            f"Another monitor is already called {fields.name!r}; names tell monitors apart",
            "name",
        )
    if fields.slug and others.filter(slug=fields.slug).exists():
        raise Refusal(
            f"Another monitor already uses this slug ({fields.slug!r}); pick another", "slug"
        )


def check_parent(monitor: Monitor | None, parent: Monitor | None) -> None:
    """A parent may not be the monitor itself or one of its own descendants: each would
    hold back the other's alerts for ever."""
    if monitor is None or parent is None:
        return
    if parent.pk == monitor.pk:
        raise Refusal("A monitor cannot depend on itself; pick another", "parent")
    seen: set[int] = set()
    step: Monitor | None = parent
    while step is not None and step.pk not in seen:
        if step.pk == monitor.pk:
            raise Refusal(
                f"{parent.name} already depends on this monitor, and a monitor cannot depend "
                "on itself, not even through others; pick another",
                "parent",
            )
        seen.add(step.pk)
        step = step.parent


def policy_in(org: Organization, pk: int | None) -> models.Model | None:
    if pk is None:
        return None
    found = policy_of(org, pk)
    if found is None:
        raise Refusal(f"No escalation policy {pk} in this organization", "policy")
    return found


def parent_in(org: Organization, pk: int | None) -> Monitor | None:
    if pk is None:
        return None
    found = Monitor.objects.filter(org=org, pk=pk).first()
    if found is None:
        raise Refusal(f"No monitor {pk} in this organization to depend on", "parent")
    return found


def settle(org: Organization, data: MonitorInput, monitor: Monitor | None) -> dict[str, Any]:
    """The values to store for a monitor, or Refusal."""
    fields = data.fields
    config = check_config(fields.kind, fields.config)
    check_unique(org, fields, monitor)
    policy, parent = policy_in(org, data.policy_id), parent_in(org, data.parent_id)
    check_parent(monitor, parent)
    values = fields.model_dump(include=set(OWN))
    values |= {"config": config, "policy": policy, "parent": parent}
    if fields.kind == "heartbeat":
        values["confirmations"] = 1  # one missed ping is confirmed already (heartbeats.apply)
    if data.ping_id is not None:
        values["ping_id"] = data.ping_id
    return values


def changes(monitor: Monitor, values: dict[str, Any]) -> list[str]:
    """The names of the settings `values` would change."""
    found = []
    for name, value in values.items():
        current = getattr(monitor, f"{name}_id" if name in ("policy", "parent") else name)
        wanted = value.pk if name in ("policy", "parent") and value is not None else value
        if current != wanted:
            found.append(name)
    return found


def reschedule(monitor: Monitor, changed: list[str], now: datetime) -> list[str]:
    """What a change does to the checks; returns the columns it set. New settings (kind,
    target) are tried at once, and failures counted under the old ones say nothing about
    them; a shorter interval brings the next check closer."""
    if {"kind", "config"} & set(changed):
        monitor.failures, monitor.next_check_at = 0, now
        heartbeat = monitor.kind == Kind.HEARTBEAT
        monitor.alarm_at = heartbeat_alarm(monitor) if heartbeat else None
        return ["failures", "next_check_at", "alarm_at"]
    if "interval" in changed:
        monitor.next_check_at = min(
            monitor.next_check_at, now + timedelta(seconds=monitor.interval)
        )
        return ["next_check_at"]
    return []


def heartbeat_alarm(monitor: Monitor) -> datetime | None:
    """When the changed schedule expects the next ping (plus grace), counted from the last
    one; a heartbeat that never pinged, or is paused, waits for its first ping."""
    if monitor.last_ping_at is None or not monitor.enabled:
        return None
    spec = heartbeats.parse(monitor.config)
    due = heartbeats.next_due(spec, monitor.last_ping_at, None)
    return heartbeats.alarm_at(spec, due, monitor.last_start_at)


# --- writing monitors -----------------------------------------------------------------------


def _record(
    action: str, monitor: Monitor, actor: Actor, pk: int | None = None, **data: Any
) -> None:
    # Names of what changed, never values: settings may hold tokens (headers, a body).
    audit.record(
        action,
        actor=actor,
        org=monitor.org,
        target=monitor.name,
        id=monitor.pk if pk is None else pk,
        kind=monitor.kind,
        **data,
    )


def add_monitor(
    org: Organization, data: MonitorInput, actor: Actor, now: datetime | None = None
) -> Monitor:
    now = now or timezone.now()
    values = settle(org, data, None)
    monitor = Monitor(
        org=org,
        **values,
        state=State.PENDING if values["enabled"] else State.PAUSED,
        state_since=now,
        # New settings are worth trying at once rather than an interval later.
        next_check_at=now,
    )
    with transaction.atomic():
        monitor.save()
        _record("monitor-added", monitor, actor)
    return monitor


def change_monitor(
    monitor: Monitor, data: MonitorInput, actor: Actor, now: datetime | None = None
) -> list[str]:
    """Apply `data`; returns the names of what changed (nothing is written when nothing
    did). Pausing or resuming is recorded as such, the other changes as one change.

    Only the changed columns are written: a prober may be saving this row's state at the
    same moment, and must not have it overwritten with what was loaded here.
    """
    now = now or timezone.now()
    values = settle(monitor.org, data, monitor)
    changed = changes(monitor, values)
    settings_changed = [name for name in changed if name != "enabled"]
    for name in settings_changed:
        setattr(monitor, name, values[name])
    columns = settings_changed + reschedule(monitor, changed, now)
    with transaction.atomic():
        if columns:
            monitor.save(update_fields=columns)
        if settings_changed:
            _record("monitor-changed", monitor, actor, changed=settings_changed)
        if "enabled" in changed:
            switch = resume_monitor if values["enabled"] else pause_monitor
            switch(monitor, actor, now)
    return changed


def remove_monitor(monitor: Monitor, actor: Actor) -> None:
    """With its history; its open incident is resolved, saying why."""
    pk = monitor.pk
    with transaction.atomic():
        state.close_incident(monitor, actor.name, f"{monitor.name} was removed.")
        monitor.delete()
        _record("monitor-removed", monitor, actor, pk=pk)


def pause_monitor(monitor: Monitor, actor: Actor, now: datetime | None = None) -> bool:
    """Stop checking (or expecting pings); False if it was paused already. A paused
    monitor cannot recover, so its open incident is resolved, with the reason noted."""
    with transaction.atomic():
        done = pause(monitor, now or timezone.now())
        if done:
            state.close_incident(monitor, actor.name, f"{monitor.name} was paused.")
            _record("monitor-paused", monitor, actor)
    monitor.refresh_from_db()
    return done


def resume_monitor(monitor: Monitor, actor: Actor, now: datetime | None = None) -> bool:
    """Check again at once (heartbeats: wait for the next ping); False if not paused."""
    with transaction.atomic():
        done = resume(monitor, now or timezone.now())
        if done:
            _record("monitor-resumed", monitor, actor)
    monitor.refresh_from_db()
    return done


def pause(monitor: Monitor, now: datetime) -> bool:
    """The state change of pausing, unaudited (pause_monitor is the one to call)."""
    if monitor.state == State.PAUSED:
        return False
    old = monitor.state
    with transaction.atomic():
        Monitor.objects.filter(pk=monitor.pk).update(
            enabled=False,
            state=State.PAUSED,
            state_since=now,
            failures=0,
            alarm_at=None,
            claimed_by="",
            claimed_until=None,
        )
        monitor.changes.create(at=now, old=old, new=State.PAUSED, evidence={})
    return True


def resume(monitor: Monitor, now: datetime) -> bool:
    """The state change of resuming, unaudited (resume_monitor is the one to call)."""
    if monitor.state != State.PAUSED:
        return False
    with transaction.atomic():
        Monitor.objects.filter(pk=monitor.pk).update(
            enabled=True, state=State.PENDING, state_since=now, failures=0, next_check_at=now
        )
        monitor.changes.create(at=now, old=State.PAUSED, new=State.PENDING, evidence={})
    return True


# --- status pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusPageInput:
    title: str
    slug: str
    intro: str = ""
    show_incidents: bool = True
    # (monitor id, public name) in the order shown.
    items: tuple[tuple[int, str], ...] = ()


SLUG_TAKEN = "Another status page already uses this address; pick another."


def status_slug_taken(slug: str, page: StatusPage | None) -> bool:
    # Addresses are unique across organizations: the URL carries no organization.
    taken = StatusPage.objects.filter(slug=slug.lower())
    if page is not None:
        taken = taken.exclude(pk=page.pk)
    return taken.exists()


def check_items(rows: list[tuple[Monitor, str]]) -> None:
    seen: set[int] = set()
    for monitor, label in rows:
        if monitor.pk in seen:
            raise Refusal(f"{monitor.name} is listed twice; show each monitor once.", "items")
        if not label.strip():
            raise Refusal(f"Give {monitor.name} a public name; its own is never shown.", "items")
        seen.add(monitor.pk)
    if not seen:
        raise Refusal("Pick at least one monitor to show on the page.", "items")


def _page_rows(org: Organization, data: StatusPageInput) -> list[tuple[Monitor, str]]:
    mine = Monitor.objects.filter(org=org).in_bulk([pk for pk, _ in data.items])
    missing = [pk for pk, _ in data.items if pk not in mine]
    if missing:
        raise Refusal(f"No monitor {missing[0]} in this organization", "items")
    rows = [(mine[pk], label.strip()) for pk, label in data.items]
    check_items(rows)
    return rows


def _save_page(page: StatusPage, data: StatusPageInput, actor: Actor, action: str) -> StatusPage:
    if status_slug_taken(data.slug, page if page.pk else None):
        raise Refusal(SLUG_TAKEN, "slug")
    rows = _page_rows(page.org, data)
    page.title, page.slug, page.intro = data.title, data.slug.lower(), data.intro
    page.show_incidents = data.show_incidents
    with transaction.atomic():
        page.save()
        # Items are updated in place, not replaced: their ids are in badge URLs people have
        # embedded elsewhere, which must keep working after an edit.
        existing = {i.monitor_id: i for i in page.items.all()}
        page.items.exclude(monitor__in=[m for m, _ in rows]).delete()
        for position, (monitor, label) in enumerate(rows):
            item = existing.get(monitor.pk) or StatusPageItem(page=page, monitor=monitor)
            item.label, item.position = label, position
            item.save()
        audit.record(
            action,
            actor=actor,
            org=page.org,
            target=page.title,
            slug=page.slug,
            show_incidents=page.show_incidents,
            items=describe_items(page),
        )
    return page


def add_status_page(org: Organization, data: StatusPageInput, actor: Actor) -> StatusPage:
    return _save_page(StatusPage(org=org), data, actor, "status-page-added")


def change_status_page(page: StatusPage, data: StatusPageInput, actor: Actor) -> StatusPage:
    return _save_page(page, data, actor, "status-page-changed")


def remove_status_page(page: StatusPage, actor: Actor) -> None:
    """Its address and badges are gone with it."""
    with transaction.atomic():
        page.delete()
        audit.record(
            "status-page-removed", actor=actor, org=page.org, target=page.title, slug=page.slug
        )


def describe_items(page: StatusPage) -> list[str]:
    """One line per item, public name and the monitor behind it: for the audit log."""
    return [f"{i.label} = {i.monitor.name}" for i in page.items.select_related("monitor")]
