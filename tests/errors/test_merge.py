"""Merging issues by hand and splitting a group back out (services.merge and split),
also while events of those issues are being stored."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry
from onwatch.errors import services
from onwatch.errors.models import Event, Issue, Project
from tests.support.errors import incoming, waits_on_a_lock

pytestmark = pytest.mark.django_db


def crash(kind: str, user: str = "", release: str = "1.0") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": kind, "value": "boom"}]},
        "user": {"id": user} if user else {},
    }


def send(project: Project, *events: dict[str, Any]) -> None:
    with transaction.atomic():  # as the ingest writer and Django's view call it
        services.take(incoming(project, *events), timezone.now())


def issues(project: Project) -> tuple[Issue, Issue]:
    send(project, crash("KeyError", "ann"), crash("KeyError", "bob"))
    send(project, crash("ValueError", "ann", release="0.9"), crash("ValueError", "cy"))
    return Issue.objects.get(title="KeyError: boom"), Issue.objects.get(title="ValueError: boom")


def test_merging_moves_the_events_and_counts_and_new_events_follow(project: Project) -> None:
    kept, other = issues(project)
    services.merge(kept, [other], SYSTEM)
    kept.refresh_from_db()
    other.refresh_from_db()
    assert (kept.event_count, kept.users_affected, kept.first_release) == (4, 3, "1.0")
    assert (other.state, other.merged_into_id, other.event_count) == ("merged", kept.pk, 0)
    assert Event.objects.filter(issue=kept).count() == 4
    send(project, crash("ValueError", "dee"))  # the merged grouping lands in the kept issue
    kept.refresh_from_db()
    assert (kept.event_count, kept.users_affected) == (5, 4)
    assert Issue.objects.filter(state="merged").count() == 1
    entry = AuditEntry.objects.get(action="errors-issues-merged")
    assert entry.data["merged"] == [other.pk]


def test_splitting_an_event_takes_its_group_back_out(project: Project) -> None:
    kept, other = issues(project)
    services.merge(kept, [other], SYSTEM)
    send(project, crash("ValueError", "dee"))
    moved = Event.objects.filter(issue=kept, merged_from=other).first()
    assert moved is not None
    services.split(moved, SYSTEM, timezone.now())
    kept.refresh_from_db()
    other.refresh_from_db()
    assert (kept.event_count, kept.users_affected) == (2, 2)
    assert (other.state, other.merged_into_id, other.event_count) == ("unresolved", None, 3)
    send(project, crash("ValueError"))  # its own again
    other.refresh_from_db()
    assert other.event_count == 4
    assert AuditEntry.objects.filter(action="errors-issue-split", data__out_of=kept.pk)


def test_an_event_of_the_kept_issue_itself_cannot_be_split(project: Project) -> None:
    kept, other = issues(project)
    services.merge(kept, [other], SYSTEM)
    own = Event.objects.filter(issue=kept, merged_from=None).first()
    assert own is not None
    with pytest.raises(services.Refusal, match="not merged in"):
        services.split(own, SYSTEM, timezone.now())


def test_a_merged_issue_cannot_be_merged_or_resolved_again(project: Project) -> None:
    kept, other = issues(project)
    services.merge(kept, [other], SYSTEM)
    other.refresh_from_db()
    with pytest.raises(services.Refusal, match="merged"):
        services.merge(other, [kept], SYSTEM)
    with pytest.raises(services.Refusal, match="merged"):
        services.resolve(other, "", SYSTEM, timezone.now())


# --- merging and splitting while an event of the same issues is being stored ---------------
# On PostgreSQL one side's transaction is held open while the other starts: the second must
# wait for the first and then see what it did. SQLite writes one transaction at a time.
committing = pytest.mark.django_db(transaction=True)
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite writes one transaction at a time"
)


def held(work: Callable[[], object], holding: threading.Event, go_on: threading.Event) -> None:
    try:
        with transaction.atomic():
            work()
            holding.set()
            go_on.wait(30)
    finally:
        connections.close_all()


def alone(work: Callable[[], object], failed: list[BaseException]) -> None:
    try:
        work()
    except BaseException as e:  # reported by the test, not lost in the thread
        failed.append(e)
    finally:
        connections.close_all()


def first_then(first: Callable[[], object], second: Callable[[], object]) -> None:
    """`first` in a transaction held open until `second` waits for it; both must succeed."""
    holding, go_on, failed = threading.Event(), threading.Event(), list[BaseException]()
    one = threading.Thread(target=held, args=(first, holding, go_on))
    one.start()
    two = threading.Thread(target=alone, args=(second, failed))
    try:
        assert holding.wait(10)
        two.start()
        deadline = time.monotonic() + 10
        while not waits_on_a_lock():
            assert time.monotonic() < deadline, "the second never waited for the first"
            time.sleep(0.02)
    finally:
        go_on.set()
        one.join(10)
    two.join(10)
    assert failed == []


@pytest.mark.parametrize("event_first", [True, False], ids=["event first", "merge first"])
@committing
@postgresql_only
def test_an_event_stored_while_its_issue_is_merged_lands_in_the_kept_issue(
    project: Project, event_first: bool
) -> None:
    kept, other = issues(project)

    def event() -> None:
        send(project, crash("ValueError", "dee"))

    def merging() -> None:
        services.merge(kept, [other], SYSTEM)

    first_then(*((event, merging) if event_first else (merging, event)))
    kept.refresh_from_db()
    other.refresh_from_db()
    assert not Event.objects.filter(issue=other).exists()  # none stranded in the merged one
    assert (kept.event_count, kept.users_affected) == (5, 4)
    assert (other.state, other.event_count) == ("merged", 0)
    assert Event.objects.filter(issue=kept, merged_from=other).count() == 3


@pytest.mark.parametrize("event_first", [True, False], ids=["event first", "split first"])
@committing
@postgresql_only
def test_an_event_stored_while_its_group_is_split_lands_in_its_own_issue(
    project: Project, event_first: bool
) -> None:
    kept, other = issues(project)
    services.merge(kept, [other], SYSTEM)
    moved = Event.objects.filter(issue=kept, merged_from=other).first()
    assert moved is not None

    def event() -> None:
        send(project, crash("ValueError", "dee"))

    def splitting() -> None:
        services.split(moved, SYSTEM, timezone.now())

    first_then(*((event, splitting) if event_first else (splitting, event)))
    kept.refresh_from_db()
    other.refresh_from_db()
    assert not Event.objects.filter(issue=kept, merged_from=other).exists()
    assert (kept.event_count, other.event_count) == (2, 3)
    assert (other.state, other.merged_into_id) == ("unresolved", None)
    assert Event.objects.filter(issue=other).count() == 3
