"""Heartbeat pings: what one ping means, recorded in one insert and (usually) one update.

The ingest path is hot — thousands of cron jobs may ping at the top of the minute — so the
common case (a success ping for a heartbeat that is already up) touches the database
three times: the lookup (in the view), the Ping insert and one conditional UPDATE of the
monitor. Anything rarer (a state change, a failure, a new heartbeat) takes the slow path
through state.apply, with the monitor row locked.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from onwatch.core.ingest.limits import Limit
from onwatch.core.models import Organization
from onwatch.uptime import heartbeats
from onwatch.uptime.heartbeats import HeartbeatSpec
from onwatch.uptime.models import Kind, Monitor, Ping, PingKey, State
from onwatch.uptime.specs import SpecError
from onwatch.uptime.state import Outcome

log = logging.getLogger("onwatch.pings")

BODY_KEEP = 10 * 1024  # kept with the ping, like Healthchecks' PING_BODY_LIMIT
BODY_REFUSE = 100 * 1024  # larger bodies are refused outright (413)
ACTIONS = {"start": Ping.Type.START, "fail": Ping.Type.FAIL, "log": Ping.Type.LOG}
# Per heartbeat, counted on both paths (Django's view and the ingest layer's fast route):
# a script pinging in a loop is told to slow down before it fills the database.
LIMIT = Limit(lambda: float(settings.PING_RATE_LIMIT))


def too_many() -> str:
    return (
        f"Too many pings for this heartbeat: onwatch takes {settings.PING_RATE_LIMIT} a "
        "second (more in short bursts); send fewer, or wait a moment"
    )


class PingError(Exception):
    """A ping request onwatch cannot take; `status` is the HTTP answer, the message is for
    the person whose script sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Received:
    type: str  # a Ping.Type
    exit_status: int | None = None
    run_id: uuid.UUID | None = None
    body: str = ""
    remote_addr: str = ""
    method: str = ""
    user_agent: str = ""


def parse_action(action: str | None) -> tuple[str, int | None]:
    """The ping type and exit status from the URL's last part (None: a plain success)."""
    if not action:
        return Ping.Type.SUCCESS, None
    if action in ACTIONS:
        return ACTIONS[action], None
    if action.isascii() and action.isdigit():
        status = int(action)
        if status > 255:
            raise PingError(400, f"Exit status {action} is out of range; use 0-255")
        return (Ping.Type.SUCCESS if status == 0 else Ping.Type.FAIL), status
    raise PingError(
        400, f"Unknown ping action {action[:40]!r}; use start, fail, log or an exit status 0-255"
    )


def parse_run_id(value: str | None) -> uuid.UUID | None:
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        example = uuid.uuid4()
        raise PingError(400, f"rid {value[:40]!r} is not a UUID; use one like {example}") from None


def body_text(raw: bytes) -> str:
    """The body as stored: up to BODY_KEEP bytes, and a marker when more came."""
    text = raw[:BODY_KEEP].decode("utf-8", errors="replace")
    if len(raw) > BODY_KEEP:
        text += f"\n[onwatch: body truncated: {len(raw)} bytes received, first {BODY_KEEP} kept]"
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


def find(ping_id: uuid.UUID) -> Monitor | None:
    try:
        return Monitor.objects.get(ping_id=ping_id, kind=Kind.HEARTBEAT)
    except Monitor.DoesNotExist:
        return None


def find_by_slug(key: str, slug: str, create: bool) -> tuple[Monitor | None, bool]:
    """The heartbeat `slug` of the organization holding ping key `key`; with `create`, made
    on first use. Returns (monitor or None, created)."""
    found = Monitor.objects.filter(org__ping_key__key=key, slug=slug).first()
    if found is not None:
        if found.kind != Kind.HEARTBEAT:
            raise PingError(409, f"{slug!r} is a monitor of kind {found.kind}, not a heartbeat")
        return found, False
    if not create:
        return None, False
    org_id = PingKey.objects.filter(key=key).values_list("org_id", flat=True).first()
    if org_id is None:
        return None, False
    try:
        with transaction.atomic():
            # One failure is already confirmed for a heartbeat (see heartbeats.apply).
            made = Monitor.objects.create(
                org_id=org_id, name=slug, kind=Kind.HEARTBEAT, slug=slug, confirmations=1
            )
    except IntegrityError:
        # Created by a concurrent ping a moment ago.
        return Monitor.objects.filter(org_id=org_id, slug=slug, kind=Kind.HEARTBEAT).first(), False
    return made, True


def ping_key(org: Organization) -> str:
    """The organization's key for slug URLs, made on first use."""
    found, _ = PingKey.objects.get_or_create(org=org, defaults={"key": secrets.token_urlsafe(16)})
    return found.key


def spec_of(monitor: Monitor) -> HeartbeatSpec:
    try:
        # Most heartbeats share a handful of settings: parse each distinct one once.
        return parsed(json.dumps(monitor.config, sort_keys=True))
    except SpecError as e:
        # A row changed behind the validators' back: keep taking pings on the defaults.
        log.warning("heartbeat %s has unusable settings (%s); using defaults", monitor.pk, e)
        return HeartbeatSpec()


@lru_cache(maxsize=1024)
def parsed(config: str) -> HeartbeatSpec:
    return heartbeats.parse(json.loads(config))


def run_start(monitor: Monitor, got: Received) -> datetime | None:
    """When the run this ping ends began: its /start with the same rid, or the last one."""
    if got.run_id is None:
        return monitor.last_start_at
    starts = Ping.objects.filter(monitor=monitor, type=Ping.Type.START, run_id=got.run_id)
    found: datetime | None = starts.order_by("-at").values_list("at", flat=True).first()
    return found


def seconds(t: timedelta) -> str:
    return f"{t.total_seconds():.1f}"


def tail(text: str, limit: int) -> str:
    """The last `limit` characters, from the start of a line when one begins in them."""
    if len(text) <= limit:
        return text
    end = text[-limit:]
    cut = end.find("\n")
    return end[cut + 1 :] if 0 <= cut < len(end) - 1 else end


def verdict(spec: HeartbeatSpec, got: Received, took: timedelta | None) -> Outcome:
    details: dict[str, Any] = {"ping": got.type}
    if got.exit_status is not None:
        details["exit_status"] = got.exit_status
    if took is not None:
        details["duration_s"] = round(took.total_seconds(), 3)
    if got.body:
        # The end of the output: where a job's error usually is. The whole of it (up to
        # BODY_KEEP) stays with the ping, on the monitor's page.
        details["body"] = tail(got.body, 500)
    error = ""
    if got.type == Ping.Type.FAIL:
        status = f" with exit status {got.exit_status}" if got.exit_status is not None else ""
        error = f"The job reported failure{status}"
    elif took is not None and spec.max_duration and took.total_seconds() > spec.max_duration:
        error = f"The run took {seconds(took)} s, longer than its limit of {spec.max_duration} s"
    elif took is not None and spec.min_duration and took.total_seconds() < spec.min_duration:
        error = (
            f"The run took only {seconds(took)} s, less than its minimum of "
            f"{spec.min_duration} s; did it do its work?"
        )
    return Outcome(ok=not error, error=error, details=details)


@dataclass
class Effect:
    """What a ping does to its monitor: the fields to set, and the outcome (if any) for
    the state machine."""

    fields: dict[str, Any]
    outcome: Outcome | None
    duration: timedelta | None = None


def effect(monitor: Monitor, got: Received, now: datetime) -> Effect:
    spec = spec_of(monitor)
    if got.type == Ping.Type.START:
        alarm = now + spec.run_limit() if monitor.enabled else None
        return Effect({"last_start_at": now, "alarm_at": alarm}, None)
    started = run_start(monitor, got)
    took = now - started if started is not None and started <= now else None
    outcome = verdict(spec, got, took)
    # Another run (announced with a different rid) may still be going: keep watching it.
    still_running = monitor.last_start_at if started != monitor.last_start_at else None
    if got.run_id is None:
        still_running = None
    alarm = None
    if outcome.ok and monitor.enabled:
        due = next_due(spec, monitor, started, now)
        alarm = heartbeats.alarm_at(spec, due, still_running)
    elif still_running is not None and monitor.enabled:
        alarm = heartbeats.alarm_at(spec, None, still_running)
    fields = {"last_ping_at": now, "last_start_at": still_running, "alarm_at": alarm}
    return Effect(fields, outcome if monitor.enabled else None, took)


def next_due(
    spec: HeartbeatSpec, monitor: Monitor, started: datetime | None, now: datetime
) -> datetime:
    """A cron run counts for the slot it started at: a long run may end inside the next
    slot's early window, and must not be taken for that slot's run. A period counts from
    the last ping, as in Healthchecks (jobs that sleep between runs measure from the end)."""
    if spec.cron and started is not None:
        due = heartbeats.next_due(spec, started, monitor.last_ping_at)
        if due > now:
            return due
    return heartbeats.next_due(spec, now, monitor.last_ping_at)


def record(monitor: Monitor, got: Received, now: datetime) -> Ping:
    """Store a ping and apply what it means to its heartbeat."""
    with transaction.atomic():
        done = effect(monitor, got, now) if got.type != Ping.Type.LOG else None
        ping = new_ping(monitor, got, now, done.duration if done else None)
        ping.save(force_insert=True)
        if done is not None and not quick_update(monitor, done, now):
            slow_update(monitor.pk, got, now)
    return ping


def new_ping(monitor: Monitor, got: Received, now: datetime, took: timedelta | None) -> Ping:
    """The row a ping is kept as (not saved yet: the ingest layer inserts many at once)."""
    return Ping(
        monitor_id=monitor.pk,
        at=now,
        type=got.type,
        exit_status=got.exit_status,
        run_id=got.run_id,
        duration_ms=int(took.total_seconds() * 1000) if took is not None else None,
        body=got.body,
        remote_addr=got.remote_addr[:45],
        method=got.method[:8],
        user_agent=got.user_agent[:200],
    )


def quick_update(monitor: Monitor, done: Effect, now: datetime) -> bool:
    """The common case in one UPDATE: no outcome, or a success for a heartbeat that is up
    with no failures counted. The condition is checked by the database, so a heartbeat
    that an overdue sweep failed a moment ago takes the slow path instead."""
    if done.outcome is None:
        Monitor.objects.filter(pk=monitor.pk).update(**done.fields)
        return True
    if not done.outcome.ok:
        return False
    fields = {**done.fields, "last_checked_at": now}
    updated = Monitor.objects.filter(pk=monitor.pk, state=State.UP, failures=0).update(**fields)
    return updated == 1


def slow_update(pk: int, got: Received, now: datetime) -> None:
    """Recompute on the locked, fresh row, then let the state machine record the change
    and open or resolve the incident."""
    # No joins here: PostgreSQL cannot lock the nullable side of an outer join (parent).
    monitor = Monitor.objects.select_for_update().get(pk=pk)
    done = effect(monitor, got, now)
    for name, value in done.fields.items():
        setattr(monitor, name, value)
    monitor.save(update_fields=list(done.fields))
    if done.outcome is not None:
        heartbeats.apply(monitor, done.outcome, now)
