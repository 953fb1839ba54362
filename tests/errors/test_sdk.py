"""The real sentry-sdk, from a plain script in its own process, against a real uvicorn
serving onwatch (the ingest layer in front of Django) on the test database."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.asgi import get_asgi_application

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest import Answer
from onwatch.core.ingest.app import Ingest
from onwatch.core.ingest.writer import Job, Writer
from onwatch.errors import fastroute, intake, keys, services
from onwatch.errors.models import Attachment, Event, Issue, Project, Tally
from tests.support import sentry_send
from tests.support.asgi import header, raw, serving, status
from tests.support.errors import digested
from tests.support.fixtures import make_org
from tests.support.procs import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()


@pytest.fixture(autouse=True)
def fresh_limits() -> None:
    intake.LIMIT.buckets.clear()  # project ids repeat from one test to the next
    keys.forget_all()
    intake._disk = (float("-inf"), False)  # looked at again, with this test's setting


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


@pytest.fixture
def onwatch() -> Iterator[tuple[int, Ingest]]:
    app = Ingest(django_app, fast=[fastroute.ROUTE])
    with serving(app) as port:
        yield port, app
        app.writer.stop()


def dsn(project: Project, port: int) -> str:
    return f"http://{project.public_key}@127.0.0.1:{port}/{project.pk}"


def send(dsn: str, scenario: str, *more: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.sentry_send", dsn, scenario, *more],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[-1] == "flushed", done.stdout
    digested()
    return lines[:-1]


def envelope(*items: tuple[dict[str, Any], bytes], event_id: str = "") -> bytes:
    head = json.dumps({"event_id": event_id} if event_id else {}).encode()
    parts = [head]
    for item_header, payload in items:
        parts += [json.dumps(item_header).encode(), payload]
    return b"\n".join(parts) + b"\n"


def post(
    port: int, project: Project, body: bytes, *headers: str, key: str = "", settle: bool = True
) -> bytes:
    """The answer, once what was queued is digested (settle: a test of rate limits sends
    as fast as it can, and waits for the digest before it reads what was stored)."""
    auth = f"X-Sentry-Auth: Sentry sentry_version=7, sentry_key={key or project.public_key}"
    answer = raw(port, "POST", f"/api/{project.pk}/envelope/", body, auth, *headers)
    if settle:
        digested()
    return answer


@pytest.mark.parametrize("compression", ["gzip", "br", "none"])
def test_an_exception_arrives_grouped_by_its_in_app_frames(
    project: Project, onwatch: tuple[int, Ingest], compression: str
) -> None:
    port, app = onwatch
    sent = send(dsn(project, port), "crash", "--count", "4", "--compression", compression)
    assert len(sent) == 4
    # Four events, raised from two lines with four order numbers: one issue.
    assert sorted(Event.objects.values_list("event_id", flat=True)) == sorted(sent)
    issue = Issue.objects.get()
    assert issue.event_count == 4
    assert issue.grouped_by == "in-app frames"
    assert issue.title.startswith("ValueError: order")
    assert issue.culprit == "__main__ in checkout"  # run with python -m
    assert issue.first_release == "shop@1.2.3"
    assert app.served >= 3, "after the first answer, events take the fast route"


def test_the_sdk_honours_the_429_of_an_exhausted_quota(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    project.hourly_quota = 2
    project.save()
    send(dsn(project, port), "crash", "--count", "6")
    assert Event.objects.count() == 2
    refused = Tally.objects.get(what="refused")
    # The third was refused with Retry-After and X-Sentry-Rate-Limits; the SDK sent none
    # of the three after it.
    assert (refused.detail, refused.count) == ("over_quota", 1)


def test_a_429_says_when_to_come_back_and_is_counted(
    project: Project, onwatch: tuple[int, Ingest], settings: Any
) -> None:
    port, _ = onwatch
    settings.ERRORS_RATE_LIMIT = 1  # a burst of ten, then one a second
    event = envelope(({"type": "event"}, b'{"message": "hello"}'))
    answers = [post(port, project, event, settle=False) for _ in range(12)]
    digested()
    assert [status(a) for a in answers[:10]] == [200] * 10
    assert status(answers[11]) == 429
    assert header(answers[11], "Retry-After") == "1"
    assert header(answers[11], "X-Sentry-Rate-Limits") == "1::project:rate_limited"
    # Every 200 stored, nothing else (the eleventh may be let through on a slow machine:
    # a second had passed, and with it a new token).
    assert Event.objects.count() == [status(a) for a in answers].count(200)
    refused = Tally.objects.get(what="refused")
    assert (refused.detail, refused.count) == ("rate_limited", 2)


def test_a_wrong_missing_or_revoked_key_is_refused(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    event = envelope(({"type": "event"}, b'{"message": "hello"}'))
    assert status(post(port, project, event)) == 200
    assert status(post(port, project, event, key="0" * 32)) == 403
    no_key = raw(port, "POST", f"/api/{project.pk}/envelope/", event)
    assert status(no_key) == 401
    auth = f"X-Sentry-Auth: Sentry sentry_key={project.public_key}"
    huge = raw(port, "POST", f"/api/{'9' * 30}/envelope/", event, auth)
    assert status(huge) == 403
    services.revoke_key(project, SYSTEM)
    revoked = post(port, project, event)
    assert status(revoked) == 403
    assert b"revoked" in revoked
    assert Event.objects.count() == 1


def test_a_zip_bomb_gets_413_and_a_malformed_envelope_400(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    bomb = gzip.compress(b"\n" * (64 * 2**20))
    answer = post(port, project, bomb, "Content-Encoding: gzip")
    assert status(answer) == 413
    assert b"unpacks to more than" in answer
    cut = envelope(({"type": "event", "length": 500}, b'{"message": "hi"}'))
    answer = post(port, project, cut)
    assert status(answer) == 400
    assert b"cut short" in answer
    assert status(post(port, project, b"not json\n")) == 400
    assert not Event.objects.exists()


def test_items_with_and_without_length_unknown_types_and_counts(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    payload = b'{"message": "with a length"}'
    report = {
        "discarded_events": [{"reason": "queue_overflow", "category": "error", "quantity": 7}]
    }
    session = {"sid": "a", "init": True, "status": "crashed", "attrs": {"release": "shop@2"}}
    body = envelope(
        ({"type": "event", "length": len(payload)}, payload),
        ({"type": "something_new"}, b'{"x": 1}'),
        ({"type": "client_report"}, json.dumps(report).encode()),
        ({"type": "session"}, json.dumps(session).encode()),
        ({"type": "attachment", "length": 5, "filename": "a.txt"}, b"hello"),
        event_id="a" * 32,
    )
    assert status(post(port, project, body, "Content-Type: text/plain")) == 200
    stored = Event.objects.get()
    assert stored.attachments.get().content == b"hello"
    counted = {(t.what, t.detail): t.count for t in Tally.objects.all()}
    assert counted[("sdk-dropped", "queue_overflow (error)")] == 7
    assert counted[("sessions", "shop@2")] == 1
    assert counted[("crashed", "shop@2")] == 1


def test_an_attachment_is_stored_with_its_event_or_refused_never_dropped(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    attached = ({"type": "attachment", "length": 4, "filename": "late.txt"}, b"late")
    early = post(port, project, envelope(attached, event_id="c" * 32))
    assert status(early) == 400, early
    assert b"attachments came before their event" in early
    assert Tally.objects.get(what="refused").detail == "no_event"
    assert not Attachment.objects.exists()
    # Its event, without an id of its own: the envelope's is its id.
    event = ({"type": "event"}, b'{"message": "with a late attachment"}')
    assert status(post(port, project, envelope(event, event_id="c" * 32))) == 200
    assert status(post(port, project, envelope(attached, event_id="c" * 32))) == 200
    stored = Event.objects.get(event_id="c" * 32)
    assert [a.content for a in stored.attachments.all()] == [b"late"]
    assert status(post(port, project, envelope(attached))) == 400  # whose is it?
    assert Attachment.objects.count() == 1


def test_browser_sdks_may_post_from_any_origin(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    asked = raw(
        port,
        "OPTIONS",
        f"/api/{project.pk}/envelope/",
        b"",
        "Origin: https://shop.example",
        "Access-Control-Request-Method: POST",
        "Access-Control-Request-Headers: content-type",
    )
    assert status(asked) == 200
    assert header(asked, "Access-Control-Allow-Origin") == "*"
    assert "POST" in (header(asked, "Access-Control-Allow-Methods") or "")
    event = envelope(({"type": "event"}, b'{"message": "from a browser"}'))
    query = f"?sentry_key={project.public_key}&sentry_version=7"
    sent = raw(
        port, "POST", f"/api/{project.pk}/envelope/{query}", event, "Origin: https://shop.example"
    )
    assert status(sent) == 200
    assert header(sent, "Access-Control-Allow-Origin") == "*"


def test_the_legacy_store_endpoint_takes_an_event(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    auth = f"X-Sentry-Auth: Sentry sentry_key={project.public_key}"
    body = json.dumps({"message": "stored the old way", "event_id": "b" * 32}).encode()
    assert status(raw(port, "POST", f"/api/{project.pk}/store/", body, auth)) == 200
    assert Event.objects.get().event_id == "b" * 32


def test_secrets_never_reach_the_stored_event(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    send(dsn(project, port), "secrets")
    stored = json.dumps(Event.objects.get().data)
    for secret in sentry_send.ALL:
        assert secret not in stored, secret
    assert sentry_send.NOT_A_CARD in stored  # not Luhn-valid: not a card
    assert "203.0.113.0" in stored  # the network part of the address stays


def test_a_nearly_full_disk_refuses_with_429_and_counts_it(
    project: Project, onwatch: tuple[int, Ingest], settings: Any
) -> None:
    port, _ = onwatch
    settings.ERRORS_MIN_FREE_MB = 2**40  # more than any disk has
    answer = post(port, project, envelope(({"type": "event"}, b'{"message": "hello"}')))
    assert status(answer) == 429
    assert header(answer, "X-Sentry-Rate-Limits") == "60::project:disk_full"
    assert not Event.objects.exists()
    assert Tally.objects.get(what="refused").detail == "disk_full"


def test_over_size_events_and_attachments_get_413(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    big = json.dumps({"message": "x" * (1024 * 1024)}).encode()
    assert status(post(port, project, envelope(({"type": "event"}, big)))) == 413
    packed = gzip.compress(envelope(({"type": "event"}, big)))
    assert status(post(port, project, packed, "Content-Encoding: gzip")) == 413
    attached = ({"type": "attachment", "length": len(big)}, big)
    small = ({"type": "event"}, b'{"message": "hello"}')
    assert (
        status(
            post(port, project, gzip.compress(envelope(small, attached)), "Content-Encoding: gzip")
        )
        == 413
    )
    assert not Event.objects.exists()


def test_a_flood_from_one_project_leaves_the_other_its_events(
    project: Project, onwatch: tuple[int, Ingest], settings: Any
) -> None:
    port, _ = onwatch
    settings.ERRORS_RATE_LIMIT = 1  # a burst of ten, then one a second, per project
    other = services.add_project(project.org, "blog", SYSTEM)
    event = envelope(({"type": "event"}, b'{"message": "hello"}'))
    flood = [status(post(port, project, event, settle=False)) for _ in range(30)]
    calm = [status(post(port, other, event, settle=False)) for _ in range(5)]
    digested()
    assert flood.count(429) >= 15
    assert calm == [200] * 5
    assert Event.objects.filter(project=other).count() == 5
    assert Event.objects.filter(project=project).count() == flood.count(200)


class Held(Writer):
    """A real writer that can be held before it writes a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.hold.set()
        self.holding = threading.Event()

    def write(self, batch: list[Job], again: bool = True) -> list[Answer | None]:
        self.holding.set()
        self.hold.wait(30)
        return super().write(batch, again)


def test_too_many_waiting_for_the_database_get_429_the_sdks_honour(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onwatch.core.ingest import writer as writer_module

    monkeypatch.setattr(writer_module, "MAX_WAITING", 1)
    writer = Held()
    app = Ingest(django_app, writer, fast=[fastroute.ROUTE])
    # With an attachment: read whole and stored by the writer (an envelope of events alone
    # is spooled, and its queue's limit is test_queue.py's).
    event = envelope(
        ({"type": "event"}, b'{"message": "hello"}'),
        ({"type": "attachment", "length": 2, "filename": "a.txt"}, b"hi"),
    )
    try:
        with serving(app) as port, ThreadPoolExecutor(2) as pool:
            assert status(post(port, project, event)) == 200  # Django's
            writer.hold.clear()
            held = pool.submit(post, port, project, event)
            assert writer.holding.wait(10)
            waiting = pool.submit(post, port, project, event)
            while writer.jobs.qsize() < 1:
                threading.Event().wait(0.01)
            refused = post(port, project, event)
            writer.hold.set()
            answers = [held.result(10), waiting.result(10)]
            writer.stop()
    finally:
        writer.hold.set()
    assert status(refused) == 429
    assert header(refused, "X-Sentry-Rate-Limits") == "5::project:queue_full"
    assert [status(a) for a in answers] == [200, 200]
    assert Event.objects.count() == 3


def test_an_event_with_nul_and_lone_surrogates_is_stored(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, _ = onwatch
    body = b'{"message": "a\\u0000b \\ud800", "extra": {"k\\u0000": 1}}'
    assert status(post(port, project, envelope(({"type": "event"}, body)))) == 200
    assert Event.objects.get().data["message"] == "ab ?"
