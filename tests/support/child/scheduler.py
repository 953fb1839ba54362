"""Child-process functions on schedules (see tests.support.child)."""

from __future__ import annotations

import json
from datetime import timedelta

from django.utils import timezone

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core.models import Job, Organization, Schedule
from tests.support.child import wait_until


def add_due_schedules_one_broken(channel_url: str) -> None:
    """Two schedules due a minute ago, "broken" with a cron expression that is not one,
    and a channel for the alert."""
    org = Organization.objects.create(name="Acme")
    add_channel(org, "ops", channel_url)
    due = timezone.now() - timedelta(minutes=1)
    for name in ("broken", "fine"):
        Schedule.objects.create(
            org=org, name=name, kind="core.noop", cron="0 3 * * *", next_run_at=due
        )
    Schedule.objects.filter(name="broken").update(cron="0 3 * *")


def print_what_fired() -> None:
    """Once a job fired and an alert went out: the broken schedule's state, the names of
    the schedules that fired and the alert titles, as JSON."""
    fired = Job.objects.filter(kind="core.noop")
    wait_until(lambda: fired.exists() and Delivery.objects.exists())
    broken = Schedule.objects.get(name="broken")
    alerts = list(Delivery.objects.values_list("title", flat=True))
    names = list(fired.values_list("schedule__name", flat=True))
    print(json.dumps([broken.enabled, broken.last_error, names, alerts]))
