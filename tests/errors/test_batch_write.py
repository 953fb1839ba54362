"""A batch of the writer stored at once (services.take_all): the same statements for forty
events as for two, and every event counted in its issue as if stored one by one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.errors import intake, services
from onwatch.errors.models import Event, Issue, Project, Tally
from tests.support.errors import incoming
from tests.support.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db


def crash(kind: str, user: str = "", event_id: str = "") -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        "release": "1.0.0",
        "environment": "production",
        "exception": {"values": [{"type": kind, "value": "boom"}]},
    }
    if user:
        event["user"] = {"id": user}
    return event


def queries_for(project: Project, requests: int, per_request: int) -> int:
    kinds = ["KeyError", "ValueError", "OSError", "TypeError"]
    batch = [
        incoming(project, *[crash(kinds[(r + n) % 4], f"u{n}") for n in range(per_request)])
        for r in range(requests)
    ]
    with CaptureQueriesContext(connection) as queries:
        assert services.take_all(batch, timezone.now()) == [None] * requests
    return len(queries)


def test_forty_events_take_as_many_statements_as_two(project: Project) -> None:
    queries_for(project, 1, 4)  # the four issues made, with their first users
    two = queries_for(project, 2, 1)
    forty = queries_for(project, 8, 5)
    assert forty == two
    assert Event.objects.count() == 4 + 2 + 40
    assert sum(Issue.objects.values_list("event_count", flat=True)) == 46
    assert Tally.objects.get(what="stored").count == 46


def test_events_of_one_batch_count_their_issue_and_users_as_one_by_one(
    project: Project,
) -> None:
    twice = uuid.uuid4().hex
    batch = [
        incoming(project, crash("KeyError", "ann", twice), crash("KeyError", "bob")),
        incoming(project, crash("KeyError", "ann"), crash("KeyError", "ann", twice)),
    ]
    assert services.take_all(batch, timezone.now()) == [None, None]
    services.take(incoming(project, crash("KeyError", "bob")), timezone.now())
    issue = Issue.objects.get()
    assert (issue.event_count, issue.users_affected) == (4, 2)  # the twin stored once
    assert Event.objects.filter(issue=issue).count() == 4


def test_a_volume_threshold_reached_within_one_batch_alerts_once(
    project: Project, org: Organization
) -> None:
    services.change_alerts(project, False, True, 5, 10, SYSTEM)
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url("/in"))
        batch = [incoming(project, crash("KeyError")) for _ in range(4)]
        services.take_all(batch, timezone.now())
        jobs.run_pending(kinds=["alerts.deliver"])
        assert hooks.hooks == []
        batch = [incoming(project, crash("KeyError")) for _ in range(3)]
        services.take_all(batch, timezone.now() + timedelta(minutes=1))
        jobs.run_pending(kinds=["alerts.deliver"])
        [hook] = hooks.hooks
    assert hook.json["title"] == "shop: KeyError: boom: 5 events in 10 min"
    assert "Events so far: 5" in hook.json["message"]


def test_a_refused_request_in_a_batch_leaves_the_others_stored(project: Project) -> None:
    project.hourly_quota = 3
    project.save()
    batch = [
        incoming(project, crash("KeyError"), crash("KeyError")),
        intake.Incoming(project.pk, "0" * 32, "", [crash("KeyError")]),
        incoming(project, crash("KeyError")),
        incoming(project, crash("KeyError")),  # over the quota of 3 by now
    ]
    found = services.take_all(batch, timezone.now())
    assert [None if r is None else r.status for r in found] == [None, 403, None, 429]
    assert Issue.objects.get().event_count == 3
    assert Tally.objects.get(what="refused").detail == "over_quota"
