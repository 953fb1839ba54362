"""Turns cron schedules into durable jobs. One bad row never stops the loop."""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from onwatch.core import jobs
from onwatch.core.crons import next_after
from onwatch.core.models import Schedule

log = logging.getLogger("onwatch.scheduler")


def tick(now: datetime | None = None) -> int:
    """Enqueue every due schedule once and move it to its next time. Returns jobs queued."""
    now = now or timezone.now()
    queued = 0
    due = Schedule.objects.filter(enabled=True).exclude(next_run_at__gt=now)
    for schedule_id in due.values_list("id", flat=True):
        try:
            queued += fire(schedule_id, now)
        except Exception:
            # Defend the loop against one bad row: log it, keep going with the rest.
            log.exception("schedule %s could not be processed", schedule_id)
    jobs.reap_expired()
    return queued


def fire(schedule_id: int, now: datetime) -> int:
    with transaction.atomic():
        schedule = Schedule.objects.select_for_update().get(id=schedule_id)
        if not schedule.enabled or (schedule.next_run_at and schedule.next_run_at > now):
            return 0  # another scheduler got there first
        try:
            following = next_after(schedule.cron, schedule.tz, now)
        except ValidationError as e:
            Schedule.objects.filter(id=schedule.id).update(
                enabled=False, last_error=" ".join(e.messages)
            )
            log.error("schedule %r disabled: %s", schedule.name, " ".join(e.messages))
            broken = True
        else:
            broken = False
            first_time = schedule.next_run_at is None
            Schedule.objects.filter(id=schedule.id).update(
                next_run_at=following,
                last_run_at=schedule.last_run_at if first_time else now,
                last_error="",
            )
            if not first_time:
                jobs.enqueue(schedule.kind, schedule.payload, org=schedule.org, schedule=schedule)
    if broken:
        from onwatch.alerts.services import raise_alert

        raise_alert(
            org=schedule.org,
            title=f"Schedule {schedule.name!r} was switched off",
            body=f"Its cron expression {schedule.cron!r} is not valid. Fix it and switch it on.",
        )
        return 0
    return 0 if first_time else 1
