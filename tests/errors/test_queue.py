"""The queue in the database, which web processes that do not digest
(ONWATCH_INGEST_DIGEST=0) fill, as every process did before the spool (test_spooled.py):
the fast route answers 200 once the envelope is queued, and a digest stores it after. A
web process killed mid-digest loses nothing and stores nothing twice; what the digest
cannot read is counted and shown; a full queue answers 429 with when to come back."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.test import Client

from onwatch.core.audit import SYSTEM
from onwatch.errors import intake, keys, services
from onwatch.errors.models import Event, Project, Queued, Tally
from tests.support.asgi import header, raw, status
from tests.support.errors import (
    digested,
    digested_after_restart,
    killed_once_storing,
    onwatch_with_a_project,
    serving_intake,
)
from tests.support.fixtures import make_org
from tests.support.procs import Running, wait_http

SENT = 400


@pytest.fixture(autouse=True)
def fresh_limits() -> None:
    intake.LIMIT.buckets.clear()
    keys.forget_all()
    intake._disk = (float("-inf"), False)


def envelope(n: int, payload: bytes = b"") -> bytes:
    event = (
        payload
        or json.dumps(
            {
                "event_id": f"{n:032x}",
                "exception": {"values": [{"type": f"E{n % 7}", "value": "x"}]},
            }
        ).encode()
    )
    return b'{}\n{"type": "event"}\n' + event + b"\n"


def post(port: int, project: Project, body: bytes) -> bytes:
    auth = f"X-Sentry-Auth: Sentry sentry_version=7, sentry_key={project.public_key}"
    return raw(port, "POST", f"/api/{project.pk}/envelope/", body, auth)


@pytest.mark.django_db(transaction=True)
def test_an_event_found_unreadable_by_the_digest_is_counted_and_shown(settings: Any) -> None:
    project = services.add_project(make_org(), "shop", SYSTEM)
    with serving_intake() as port:
        assert status(post(port, project, envelope(1))) == 200  # Django's, teaching the route
        # The framing reads, so it is queued and answered 200; its event is not JSON.
        assert status(post(port, project, envelope(2, b'{"message": "cut'))) == 200
        assert status(post(port, project, envelope(3))) == 200
        digested()
    assert sorted(Event.objects.values_list("event_id", flat=True)) == [f"{1:032x}", f"{3:032x}"]
    counted = {(t.what, t.detail): t.count for t in Tally.objects.all()}
    assert counted[("stored", "")] == 2
    assert counted[("refused", "unreadable")] == 1
    shown = services.refused_last_hour(project, Tally.objects.first().hour)  # type: ignore[union-attr]
    assert shown == [("accepted, then could not be read (not valid JSON or not an event)", 1)]


@pytest.mark.django_db(transaction=True)
def test_a_full_queue_answers_429_with_when_to_come_back(settings: Any) -> None:
    settings.INGEST_DIGEST = False  # nothing digested: the queue only grows
    settings.ERRORS_QUEUE_MAX = 3
    project = services.add_project(make_org(), "shop", SYSTEM)
    with serving_intake() as port:
        answers = [post(port, project, envelope(n)) for n in range(6)]
    # The first through Django (stored at once), three queued, then the queue is full.
    assert [status(a) for a in answers] == [200] * 4 + [429] * 2
    assert header(answers[-1], "Retry-After") == "5"
    assert header(answers[-1], "X-Sentry-Rate-Limits") == "5::project:queue_full"
    assert Queued.objects.count() == 3
    assert Tally.objects.get(what="refused", detail="queue_full").count == 2


def attachment_of(n: int) -> bytes:
    """An envelope of one attachment of event `n`, sent on its own after the event."""
    return (
        f'{{"event_id": "{n:032x}"}}\n'.encode()
        + b'{"type": "attachment", "length": 4, "filename": "late.txt"}\nlate\n'
    )


@pytest.mark.django_db(transaction=True)
def test_an_attachment_sent_after_its_queued_event_is_stored_with_it(settings: Any) -> None:
    settings.INGEST_DIGEST = False  # the event stays queued when its attachment comes
    project = services.add_project(make_org(), "shop", SYSTEM)
    with serving_intake() as port:
        assert status(post(port, project, envelope(1))) == 200  # Django's, teaching the route
        assert status(post(port, project, envelope(2))) == 200
        assert Queued.objects.count() == 1
        answer = post(port, project, attachment_of(2))
        assert status(answer) == 200, answer
        # Through Django's view (the path of the first request from a host) alike.
        assert status(post(port, project, envelope(3))) == 200
        assert Queued.objects.count() == 1
    auth = f"Sentry sentry_key={project.public_key}"
    through_django = Client().post(
        f"/api/{project.pk}/envelope/",
        attachment_of(3),
        content_type="application/x-sentry-envelope",
        headers={"X-Sentry-Auth": auth},
    )
    assert through_django.status_code == 200, through_django.content
    for n in (2, 3):
        stored = Event.objects.get(event_id=f"{n:032x}")
        assert [a.content for a in stored.attachments.all()] == [b"late"]
    assert not Queued.objects.exists()
    assert not Tally.objects.filter(what="refused").exists()


def counts(env: dict[str, str]) -> tuple[int, int, int]:
    """Events stored, envelopes queued, and events counted in their issues."""
    sql = (
        "SELECT (SELECT count(*) FROM errors_event), (SELECT count(*) FROM errors_queued), "
        "(SELECT coalesce(sum(event_count), 0) FROM errors_issue)"
    )
    url = env.get("DATABASE_URL")
    if url:
        with psycopg.connect(url) as conn:
            row = conn.execute(sql).fetchone()
    else:
        path = Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20) as conn:
            row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def send_all(base_url: str, dsn_key: str, project_id: int) -> None:
    url = f"{base_url}/api/{project_id}/envelope/?sentry_key={dsn_key}"
    for n in range(SENT):
        with urllib.request.urlopen(urllib.request.Request(url, envelope(n)), timeout=30) as a:
            assert a.status == 200


def test_a_web_process_killed_mid_digest_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    with onwatch_with_a_project(tmp_path) as (env, key):
        # Taken and queued, not digested: a web process that only accepts.
        with Running(["web"], {**env, "ONWATCH_INGEST_DIGEST": "0"}) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            send_all(web.base_url, key, 1)
        stored, queued, _ = counts(env)
        assert stored == 1 and queued == SENT - 1  # the first answered by Django, stored
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)  # its first request: the digest starts
            killed_once_storing(web, lambda: counts(env)[0])  # mid-digest: more queued
        killed_at = counts(env)
        assert killed_at[0] < SENT and killed_at[1] > 0, f"the digest was not cut: {killed_at}"
        digested_after_restart(env, lambda: counts(env)[1])
        assert counts(env) == (SENT, 0, SENT)
