"""Storing what SDKs send (onwatch/errors/services.py) when senders race: the first
events of one new issue, or the first tally of an hour, sent at once by two senders are
both stored — the unique constraint decides which one makes the row, the other adds to it.

On PostgreSQL the second sender's insert waits for the first's transaction and then fails
the constraint; SQLite takes one writer at a time, so the race is PostgreSQL's only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.errors import intake, services
from onwatch.errors.models import Event, Issue, Project, Tally
from tests.support.asgi import raw, status
from tests.support.errors import serving_intake, waits_on_a_lock
from tests.support.fixtures import make_org

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_limits"),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="SQLite writes one transaction at a time"
    ),
]
EVENT = b'{}\n{"type": "event"}\n{"message": "the first of its kind"}\n'
# The same event (one id) from two senders, as an SDK's retry while the first is in flight.
TWIN = (
    b'{"event_id": "dddddddddddddddddddddddddddddddd"}\n{"type": "event"}\n{"message": "twice"}\n'
)
SESSION = (
    b'{}\n{"type": "session"}\n'
    + json.dumps({"sid": "a", "init": True, "attrs": {"release": "shop@9"}}).encode()
)


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


@pytest.fixture
def port() -> Iterator[int]:
    with serving_intake() as port:
        yield port


def stored(project: Project, body: bytes) -> None:
    auth = {"x-sentry-auth": f"Sentry sentry_key={project.public_key}"}
    incoming = intake.accept(project.pk, "envelope", auth, b"", body, "127.0.0.1")
    with transaction.atomic():
        assert intake.write(incoming, timezone.now()).status == 200


def stored_and_held(project: Project, body: bytes, holding: threading.Event,
                    release: threading.Event) -> None:  # fmt: skip
    """One sender: `body` read and stored by the real intake, its transaction held open
    until `release`."""
    try:
        with transaction.atomic():
            stored(project, body)
            holding.set()
            release.wait(30)
    finally:
        connections.close_all()


@pytest.mark.parametrize("body", [EVENT, SESSION, TWIN], ids=["new issue", "new tally", "twin"])
def test_two_senders_of_a_new_issue_at_once_are_both_stored(
    project: Project, port: int, body: bytes
) -> None:
    if body is TWIN:  # its issue made before, so the twins meet at the event's own row
        stored(project, b'{}\n{"type": "event"}\n{"message": "twice"}\n')
    holding, release = threading.Event(), threading.Event()
    first = threading.Thread(target=stored_and_held, args=(project, body, holding, release))
    first.start()
    answers: list[bytes] = []
    try:
        assert holding.wait(10)
        auth = f"X-Sentry-Auth: Sentry sentry_key={project.public_key}"
        url = f"/api/{project.pk}/envelope/"
        second = threading.Thread(target=lambda: answers.append(raw(port, "POST", url, body, auth)))
        second.start()
        deadline = time.monotonic() + 10
        while not waits_on_a_lock():  # the second's insert waits for the first's commit
            assert time.monotonic() < deadline, "the second sender never met the first"
            time.sleep(0.02)
    finally:
        release.set()
        first.join(10)
    second.join(10)
    assert [status(a) for a in answers] == [200], answers
    if body is EVENT:
        assert Issue.objects.get().event_count == 2
        assert Event.objects.count() == 2
        assert Tally.objects.get(what="stored").count == 2
    elif body is SESSION:
        assert Tally.objects.get(what="sessions").count == 2
    else:  # one event, counted once in its issue
        assert Event.objects.filter(event_id="d" * 32).count() == 1
        assert Issue.objects.get().event_count == 2
