"""Grouping versions (onwatch/errors/grouping.py, services.issue_for): the rules of
version 2 group a made-up stack and a browser's URLs otherwise than version 1 did, and an
issue made under version 1 still gets every event that version 1 would have given it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.models import Organization
from onwatch.errors import grouping, intake, services
from onwatch.errors.models import Event, Issue, Project
from tests.support.errors import send
from tests.support.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db


def message_with_made_up_stack(text: str) -> dict[str, Any]:
    """As @sentry/node sends a captureMessage: v1 grouped it by the stack, v2 by the text."""
    frame = {"module": "shop.log", "function": "report", "lineno": 3, "in_app": True}
    made_up = {
        "value": text,
        "stacktrace": {"frames": [frame]},
        "mechanism": {"type": "generic", "synthetic": True},
    }
    return {"event_id": uuid.uuid4().hex, "message": text, "exception": {"values": [made_up]}}


def browser_crash(url: str) -> dict[str, Any]:
    """v1 grouped a browser's frame by its whole URL, v2 by its path."""
    frame = {"filename": url, "function": "placeOrder", "lineno": 7, "in_app": True}
    exc = {"type": "RangeError", "value": "negative", "stacktrace": {"frames": [frame]}}
    return {"event_id": uuid.uuid4().hex, "exception": {"values": [exc]}}


def made_by_version_1(project: Project, event: dict[str, Any]) -> Issue:
    """The issue the previous rules made of this event (as onwatch stored it then)."""
    digest, by = grouping.hashed(event, 1)
    now = timezone.now()
    return Issue.objects.create(
        project=project,
        grouping_hash=digest,
        grouping_version=1,
        grouped_by=by,
        title="made under version 1",
        first_seen=now,
        last_seen=now,
        event_count=1,
    )


@pytest.mark.parametrize(
    "event",
    [
        message_with_made_up_stack("export of 3 orders failed"),
        browser_crash("https://shop.example/static/app.js?v=1"),
    ],
    ids=["made-up stack", "browser url"],
)
def test_an_event_whose_new_grouping_finds_no_issue_joins_its_version_1_issue(
    project: Project, event: dict[str, Any]
) -> None:
    assert grouping.hashed(event, 1)[0] != grouping.grouping(event).hash
    old = made_by_version_1(project, event)
    send(project, event)
    assert Issue.objects.count() == 1
    old.refresh_from_db()
    assert old.event_count == 2 and old.grouping_version == 1
    assert Event.objects.get().issue_id == old.pk


def test_a_new_issue_is_made_under_version_2(project: Project) -> None:
    event = message_with_made_up_stack("the cache is cold")
    send(project, event)
    issue = Issue.objects.get()
    assert (issue.grouping_version, issue.grouping_hash) == (2, grouping.grouping(event).hash)
    assert issue.grouped_by == "message"
    send(project, message_with_made_up_stack("the cache is cold"))
    assert Issue.objects.get().event_count == 2


def test_an_old_issue_keeps_its_events_when_version_2_joins_it_with_others(
    project: Project,
) -> None:
    # Version 1 kept the two host names apart; version 2 joins them. The old issue of the
    # first host must not lose its events to the issue the other host's event makes.
    first = browser_crash("https://shop.example/static/app.js")
    old = made_by_version_1(project, first)
    send(project, browser_crash("https://www.shop.example/static/app.js"))
    send(project, browser_crash("https://shop.example/static/app.js"))
    old.refresh_from_db()
    new = Issue.objects.get(grouping_version=2)
    assert (old.event_count, new.event_count) == (2, 1)


def made_by_the_release_before(project: Project, event: dict[str, Any]) -> Issue:
    """The issue the previous release of onwatch made: it grouped made-up stacks and
    browser URLs as version 2 does (its hash is today's), but stored the issue as version 1."""
    issue = made_by_version_1(project, event)
    issue.grouping_hash = grouping.grouping(event).hash
    issue.save()
    return issue


@pytest.fixture
def alerted(project: Project, org: Organization) -> Iterator[WebhookReceiver]:
    project.alert_new_issues = True
    project.save()
    with WebhookReceiver() as receiver:
        add_channel(org, "hook", receiver.url("/in"))
        yield receiver


@pytest.mark.parametrize(
    "event",
    [
        message_with_made_up_stack("export of 3 orders failed"),
        browser_crash("https://shop.example/static/app.js?v=1"),
    ],
    ids=["made-up stack", "browser url"],
)
def test_an_issue_of_the_release_before_keeps_its_events_through_the_view(
    project: Project, event: dict[str, Any], alerted: WebhookReceiver
) -> None:
    old = made_by_the_release_before(project, event)
    path = f"/api/{project.pk}/store/?sentry_key={project.public_key}"
    for _ in range(2):
        sent = {**event, "event_id": uuid.uuid4().hex}
        answer = Client().post(path, json.dumps(sent).encode(), content_type="text/plain")
        assert answer.status_code == 200
    # With an attachment, the event takes the one-event path (services.issue_for).
    attached = {"type": "attachment", "length": 5, "filename": "a.txt"}
    body = b"\n".join(
        [b"{}", b'{"type": "event"}', json.dumps(event).encode(), json.dumps(attached).encode()]
    )
    answer = Client().post(
        f"/api/{project.pk}/envelope/?sentry_key={project.public_key}",
        body + b"\nhello\n",
        content_type="text/plain",
    )
    assert answer.status_code == 200
    jobs.run_pending(kinds=["alerts.deliver"])
    assert Issue.objects.count() == 1
    old.refresh_from_db()
    assert old.event_count == 4 and old.grouping_version == 1
    assert set(Event.objects.values_list("issue_id", flat=True)) == {old.pk}
    assert alerted.hooks == []


def test_an_issue_of_the_release_before_keeps_its_events_in_a_batch(
    project: Project, alerted: WebhookReceiver
) -> None:
    kept = message_with_made_up_stack("export of 3 orders failed")
    old = made_by_the_release_before(project, kept)
    older = made_by_version_1(project, browser_crash("https://shop.example/static/a.js"))

    def incoming(*events: dict[str, Any]) -> intake.Incoming:
        return intake.Incoming(project.pk, project.public_key, "192.0.2.9", list(events))

    again = [message_with_made_up_stack("export of 3 orders failed") for _ in range(3)]
    other = browser_crash("https://shop.example/static/a.js")
    batch = [incoming(again[0], other), incoming(again[1], again[2])]
    assert services.take_all(batch, timezone.now()) == [None, None]
    jobs.run_pending(kinds=["alerts.deliver"])
    assert Issue.objects.count() == 2
    old.refresh_from_db()
    older.refresh_from_db()
    assert (old.event_count, older.event_count) == (4, 2)
    assert alerted.hooks == []
