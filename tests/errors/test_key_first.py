"""The intake checks a request's key before anything its body could cost, counts only
requests with the right key against the project's rate, and reads bodies off the event
loop: a real uvicorn serving onwatch (the ingest layer in front of Django)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.asgi import get_asgi_application

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest.app import Ingest
from onwatch.errors import fastroute, intake, keys, protocol, services
from onwatch.errors.models import Event, Project
from onwatch.uptime import fastping, heartbeats
from onwatch.uptime.models import Kind, Monitor, Ping
from tests.support.asgi import raw, serving, status
from tests.support.errors import digested
from tests.support.fixtures import make_org

pytestmark = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()
EVENT = b'{}\n{"type": "event"}\n{"message": "hello"}\n'
# 18 MB of blank lines after an envelope header, 18 KB gzipped.
BOMB = gzip.compress(b"{}\n" + b"\n" * (18 * 2**20))


@pytest.fixture(autouse=True)
def fresh_limits() -> None:
    intake.LIMIT.buckets.clear()  # project ids repeat from one test to the next
    keys.forget_all()


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


@pytest.fixture
def port() -> Iterator[int]:
    app = Ingest(django_app, fast=[fastroute.ROUTE, fastping.ROUTE])
    with serving(app) as port:
        yield port
        app.writer.stop()


@pytest.fixture
def unpacked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the bodies decompressed in full, as they are."""
    sizes: list[int] = []
    real = protocol.unpacked

    def counted(body: bytes, encoding: str) -> bytes:
        sizes.append(len(body))
        return real(body, encoding)

    monkeypatch.setattr(protocol, "unpacked", counted)
    return sizes


def post(port: int, project: Project, body: bytes, *headers: str, key: str = "") -> bytes:
    auth = f"X-Sentry-Auth: Sentry sentry_version=7, sentry_key={key or project.public_key}"
    return raw(port, "POST", f"/api/{project.pk}/envelope/", body, auth, *headers)


def test_a_bomb_with_a_wrong_key_is_refused_before_it_is_unpacked(
    project: Project, port: int, unpacked: list[int]
) -> None:
    assert status(post(port, project, EVENT)) == 200  # Django's; the fast route's next
    unpacked.clear()
    started = time.monotonic()
    for _ in range(2):  # through the fast route, then again
        wrong = post(port, project, BOMB, "Content-Encoding: gzip", key="0" * 32)
        assert status(wrong) == 403
        assert b"unknown project or key" in wrong
    query = f"/api/{project.pk}/envelope/?sentry_key={'0' * 32}"
    assert status(raw(port, "POST", query, BOMB, "Content-Encoding: gzip")) == 403
    elsewhere = raw(port, "POST", f"/api/{project.pk + 1}/envelope/", BOMB,
                    f"X-Sentry-Auth: Sentry sentry_key={project.public_key}",
                    "Content-Encoding: gzip")  # fmt: skip
    assert status(elsewhere) == 403
    assert unpacked == [], "no body was decompressed"
    assert time.monotonic() - started < 5  # it was 12.9 s a bomb


def test_the_key_in_the_envelope_header_alone_is_read_without_unpacking_the_rest(
    project: Project, port: int, unpacked: list[int]
) -> None:
    def dsn(key: str) -> bytes:
        return json.dumps({"dsn": f"http://{key}@127.0.0.1/{project.pk}"}).encode()

    url = f"/api/{project.pk}/envelope/"
    bomb = gzip.compress(dsn("0" * 32) + b"\n" + b"\n" * (18 * 2**20))
    assert status(raw(port, "POST", url, bomb, "Content-Encoding: gzip")) == 403
    assert unpacked == []
    right = gzip.compress(dsn(project.public_key) + EVENT[2:])
    for _ in range(2):  # through Django, then through the fast route
        assert status(raw(port, "POST", url, right, "Content-Encoding: gzip")) == 200
    digested()
    assert Event.objects.count() == 2
    assert status(raw(port, "POST", url, EVENT)) == 401  # no key anywhere


def test_requests_with_a_wrong_key_do_not_use_up_the_projects_rate(
    project: Project, port: int, settings: Any
) -> None:
    settings.ERRORS_RATE_LIMIT = 1  # a burst of ten, then one a second
    assert status(post(port, project, EVENT)) == 200
    wrong = [status(post(port, project, EVENT, key="0" * 32)) for _ in range(20)]
    right = [status(post(port, project, EVENT)) for _ in range(5)]
    assert wrong == [403] * 20
    assert right == [200] * 5
    digested()
    assert Event.objects.count() == 6


def test_other_events_and_pings_are_answered_while_a_large_body_is_read(
    project: Project, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading, done_reading = threading.Event(), threading.Event()
    real = protocol.envelope

    def slow(body: bytes) -> Any:
        if len(body) > 100_000:  # the large one: held while it is read
            reading.set()
            done_reading.wait(30)
        return real(body)

    monkeypatch.setattr(protocol, "envelope", slow)
    assert status(post(port, project, EVENT)) == 200  # Django's; the fast route's next
    beat = Monitor.objects.create(
        org=project.org,
        name="nightly",
        kind=Kind.HEARTBEAT,
        config=heartbeats.validate({"period": 3600, "grace": 60}),
    )
    ping = f"/ping/{beat.ping_id}"
    assert status(raw(port, "GET", ping)) == 200  # Django's; the fast route's next
    large = b'{}\n{"type": "event"}\n' + json.dumps({"message": "x" * 500_000}).encode()
    with ThreadPoolExecutor(1) as pool:
        try:
            held = pool.submit(post, port, project, large)
            assert reading.wait(10)
            others = [status(post(port, project, EVENT)) for _ in range(3)]
            others += [status(raw(port, "GET", ping)) for _ in range(3)]
            assert not held.done(), "the large one was still being read"
        finally:
            done_reading.set()
        assert status(held.result(10)) == 200
    assert others == [200] * 6
    digested()
    assert Event.objects.count() == 5
    assert Ping.objects.filter(monitor=beat).count() == 4


def test_a_database_that_does_not_answer_the_key_lookup_leaves_the_request_to_django(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL restarting, SQLite busy past its wait: the fast route steps aside, so
    # Django answers as it does for any request then, never a bare 500 of the server.
    from django.db import OperationalError

    from onwatch.core.ingest.request import Request
    from onwatch.errors import fastroute, keys

    def down(project_id: int) -> None:
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(keys, "_from_database", down)
    keys.forget_all()
    request = Request(
        method="POST",
        path="/api/7/envelope/",
        query=b"sentry_key=abc",
        remote_addr="192.0.2.1",
        user_agent="sentry.python/2",
        declared=2,
        incoming_id=None,
        host=(),
        headers=[],
    )
    assert fastroute.accept(request, b"{}") is None
