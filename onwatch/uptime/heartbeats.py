"""Heartbeat schedules: when the next ping is due, when a missing one becomes an alarm, and
the overdue sweep the scheduler runs.

A heartbeat expects a ping every `period` seconds, or at each slot of a `cron` expression
in a time zone `tz`, and alarms `grace` seconds after the ping was due. A run announced by
/start must finish within `max_duration` (or, without one, within the grace time, as
Healthchecks does); `min_duration` catches runs that end suspiciously fast.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from pydantic import Field, model_validator
from pydantic import ValidationError as PydanticError

from onwatch.core.crons import next_after, validate_schedule
from onwatch.uptime import state
from onwatch.uptime.models import Kind, Monitor
from onwatch.uptime.specs import Spec, SpecError

log = logging.getLogger("onwatch.heartbeats")

YEAR = 366 * 86400
# A ping this much before its slot counts for that slot (cron daemons and clocks drift a
# few seconds; a job that starts early must not be "missing" until its next slot). A tenth
# of the gap between slots, never more than an hour: "a little" for any schedule.
EARLY_FRACTION = 0.1
EARLY_CAP = timedelta(hours=1)


class HeartbeatSpec(Spec):
    period: int | None = Field(default=None, ge=60, le=YEAR)
    cron: str = ""
    tz: str = "UTC"
    grace: int = Field(default=3600, ge=0, le=YEAR)
    min_duration: int | None = Field(default=None, ge=1, le=YEAR)
    max_duration: int | None = Field(default=None, ge=1, le=YEAR)

    @model_validator(mode="after")
    def _schedule(self) -> HeartbeatSpec:
        if self.cron and self.period is not None:
            raise ValueError("give either 'period' (seconds) or 'cron', not both")
        if self.cron:
            try:
                validate_schedule(self.cron, self.tz)
            except ValidationError as e:
                raise ValueError(" ".join(e.messages)) from None
        low, high = self.min_duration, self.max_duration
        if low is not None and high is not None and low >= high:
            raise ValueError("'min_duration' must be shorter than 'max_duration'")
        return self

    @property
    def every(self) -> timedelta:
        """The period; a day when neither period nor cron is given (Healthchecks' default)."""
        return timedelta(seconds=self.period or 86400)

    @property
    def grace_time(self) -> timedelta:
        return timedelta(seconds=self.grace)

    def run_limit(self) -> timedelta:
        """How long a started run may take before it counts as failed."""
        return timedelta(seconds=self.max_duration or self.grace)


def parse(config: dict[str, Any]) -> HeartbeatSpec:
    """The heartbeat settings in `config`, or SpecError with one sentence."""
    if not isinstance(config, dict):
        raise SpecError("The settings must be a mapping of names to values")
    try:
        return HeartbeatSpec.model_validate(config)
    except PydanticError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if first["type"] == "value_error":
            raise SpecError(str(first["ctx"]["error"]).removeprefix("Value error, ")) from None
        if first["type"] == "extra_forbidden":
            raise SpecError(f"'{field}' is not a setting of a heartbeat; remove it") from None
        raise SpecError(f"'{field}' is not valid: {first['msg'].lower()}") from None


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """The config to store for a heartbeat (defaults left out), or SpecError."""
    found: dict[str, Any] = parse(config).model_dump(mode="json", exclude_defaults=True)
    return found


def early(gap: timedelta) -> timedelta:
    return min(gap * EARLY_FRACTION, EARLY_CAP)


def next_due(spec: HeartbeatSpec, at: datetime, last_ping_at: datetime | None) -> datetime:
    """When the ping after one received at `at` is due.

    A ping slightly before its slot counts for that slot, so the next one is due a whole
    slot later, not right away.
    """
    if spec.cron:
        upcoming = next_after(spec.cron, spec.tz, at)
        following = next_after(spec.cron, spec.tz, upcoming)
        due = following if upcoming - at <= early(following - upcoming) else upcoming
        return due.astimezone(UTC)
    expected = last_ping_at + spec.every if last_ping_at else None
    if expected is not None and at < expected <= at + early(spec.every):
        return expected + spec.every
    return at + spec.every


def alarm_at(
    spec: HeartbeatSpec, due: datetime | None, started: datetime | None
) -> datetime | None:
    """When silence becomes a failure: the due time plus grace, or sooner if a started run
    overstays its limit."""
    alarms = []
    if due is not None:
        alarms.append(due + spec.grace_time)
    if started is not None:
        alarms.append(started + spec.run_limit())
    return min(alarms) if alarms else None


def overdue_reason(monitor: Monitor, spec: HeartbeatSpec, now: datetime) -> str:
    started = monitor.last_start_at
    if started is not None and started + spec.run_limit() <= now:
        limit = int(spec.run_limit().total_seconds())
        return f"The run started at {started:%Y-%m-%d %H:%M:%S} UTC did not finish within {limit} s"
    if monitor.last_ping_at is None:
        return "No ping arrived in time"
    return (
        f"No ping since {monitor.last_ping_at:%Y-%m-%d %H:%M:%S} UTC; "
        f"the next one was due, with {spec.grace} s of grace, by {now:%Y-%m-%d %H:%M:%S} UTC"
    )


def apply(monitor: Monitor, outcome: state.Outcome, now: datetime) -> None:
    """state.apply with heartbeat semantics: one failure is already confirmed.

    A missed heartbeat has waited out its grace time, and a /fail ping is the job's own
    verdict, so asking for N failures in a row (meant for flaky network checks) would only
    delay the alarm by N periods. The instance's setting is overridden here, whatever the
    row says, so heartbeats created by any path (UI, API, import) behave the same.
    """
    monitor.confirmations = 1
    state.apply(monitor, outcome, now)


def check_overdue(now: datetime) -> int:
    """Fail every heartbeat whose alarm time has passed; returns how many were failed.

    Each one is claimed by clearing its alarm with a conditional UPDATE, so several
    schedulers (or a ping arriving at the same moment) never fail it twice. One bad row is
    logged and skipped, never stops the sweep.
    """
    due = Monitor.objects.filter(kind=Kind.HEARTBEAT, enabled=True, alarm_at__lte=now)
    failed = 0
    for pk, alarm in due.order_by("alarm_at").values_list("pk", "alarm_at"):
        try:
            failed += fail_overdue(pk, alarm or now, now)
        except Exception:
            log.exception("heartbeat %s could not be checked", pk)
    return failed


def fail_overdue(pk: int, alarm: datetime, now: datetime) -> int:
    with transaction.atomic():
        if Monitor.objects.filter(pk=pk, alarm_at=alarm).update(alarm_at=None) != 1:
            return 0  # a ping moved the alarm, or another sweep took it
        monitor = Monitor.objects.select_related("org", "parent").get(pk=pk)
        try:
            reason = overdue_reason(monitor, parse(monitor.config), now)
        except SpecError as e:
            reason = f"The heartbeat's settings are not usable: {e}"
        apply(monitor, state.Outcome(ok=False, error=reason, details={"overdue": True}), now)
    return 1
