"""Grouping versions (onwatch/errors/grouping.py, services.issue_for): the rules of
version 2 group a made-up stack and a browser's URLs otherwise than version 1 did, and an
issue made under version 1 still gets every event that version 1 would have given it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.errors import grouping, intake, services
from onwatch.errors.models import Event, Issue, Project

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


def send(project: Project, *events: dict[str, Any]) -> None:
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", list(events))
    services.take(incoming, timezone.now())


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


@pytest.fixture
def project(org: Organization) -> Project:
    made = services.add_project(org, "shop", SYSTEM)
    made.alert_new_issues = False
    made.save()
    return made


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
