"""Turns cron schedules into durable jobs. One bad row never stops the loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from onwatch.core import hooks, jobs
from onwatch.core.crons import next_after
from onwatch.core.models import Schedule

log = logging.getLogger("onwatch.scheduler")

# Work that must run every tick (seconds, not cron minutes): escalations, overdue
# heartbeats. Apps register here from their AppConfig.ready(), so core imports no app.
TickHook = Callable[[datetime], object]
TICK_HOOKS: dict[str, TickHook] = {}
# Install-wide schedules every onwatch has (name -> (job kind, cron)), created when the
# scheduler starts if missing; people may change their times but not lose them.
BUILTIN: dict[str, tuple[str, str]] = {}


def every_tick(name: str, hook: TickHook) -> None:
    TICK_HOOKS[name] = hook


def builtin_schedule(name: str, kind: str, cron: str) -> None:
    BUILTIN[name] = (kind, cron)


def ensure_builtin() -> int:
    made = 0
    for name, (kind, cron) in BUILTIN.items():
        _, created = Schedule.objects.get_or_create(
            org=None, name=name, defaults={"kind": kind, "cron": cron, "tz": "UTC"}
        )
        made += created
    return made


def tick(now: datetime | None = None) -> int:
    """Run the tick hooks, enqueue every due schedule once and move it to its next time,
    and reap jobs whose worker died. Returns jobs queued."""
    now = now or timezone.now()
    for name, hook in TICK_HOOKS.items():
        try:
            hook(now)
        except Exception:
            # One failing hook must not starve the others or the schedules.
            log.exception("tick step %s failed", name)
    queued = 0
    due = Schedule.objects.filter(enabled=True).exclude(next_run_at__gt=now)
    for schedule_id in due.order_by("id").values_list("id", flat=True):
        try:
            queued += fire(schedule_id, now)
        except Exception as e:
            # Defend the loop against one bad row (healthchecks' sendalerts once crash-looped
            # for hours on one malformed cron expression): note it, go on with the rest.
            log.exception("schedule %s could not be processed", schedule_id)
            note_error(schedule_id, f"{type(e).__name__}: {e}")
    jobs.reap_expired()
    return queued


def fire(schedule_id: int, now: datetime) -> int:
    """Enqueue one due schedule (or only place it, the first time). Returns jobs queued."""
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(id=schedule_id)
        if not schedule.enabled or (schedule.next_run_at and schedule.next_run_at > now):
            return 0  # another scheduler got there first
        try:
            following = next_after(schedule.cron, schedule.tz, now)
        except ValidationError as e:
            switch_off(schedule, " ".join(e.messages))
            return 0
        first_time = schedule.next_run_at is None
        Schedule.objects.filter(id=schedule.id).update(
            next_run_at=following,
            last_run_at=schedule.last_run_at if first_time else now,
            last_error="",
        )
        if first_time:
            return 0
        jobs.enqueue(schedule.kind, schedule.payload, org=schedule.org, schedule=schedule)
        return 1


def switch_off(schedule: Schedule, reason: str) -> None:
    """A schedule that can never run again (its expression or zone is bad, say after a raw
    UPDATE) is switched off and alerted on, in one transaction with the caller's."""
    Schedule.objects.filter(id=schedule.id).update(enabled=False, last_error=reason)
    log.error("schedule %r switched off: %s", schedule.name, reason)
    hooks.alert(
        org=schedule.org,
        title=f"Schedule {schedule.name!r} was switched off",
        body=f"{reason} Fix the schedule and switch it on again.",
        link=reverse("jobs"),
    )


def note_error(schedule_id: int, error: str) -> None:
    """Best effort: the error may be the database itself, which then refuses this too."""
    try:
        Schedule.objects.filter(id=schedule_id).update(last_error=error[:2000])
    except Exception:
        log.exception("could not record the error of schedule %s", schedule_id)
