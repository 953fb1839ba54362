"""Every refusal of an event says why in X-Sentry-Error, where Sentry's SDKs and Relay
read it: Django's answers and the fast route's alike (a real uvicorn serving onwatch, the
ingest layer in front of Django, raw requests)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.db import OperationalError

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest import Answer
from onwatch.core.ingest.app import Ingest
from onwatch.core.ingest.request import Receive, Scope, Send
from onwatch.core.ingest.writer import Job, Writer
from onwatch.errors import fastroute, intake, keys, services, spooled
from onwatch.errors.models import Event, Project
from tests.support.asgi import header, raw, serving, status
from tests.support.fixtures import make_org

pytestmark = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()
EVENT = b'{}\n{"type": "event"}\n{"message": "hello"}\n'
# Read whole and stored by the layer's writer, not spooled.
WITH_ATTACHMENT = EVENT + b'{"type": "attachment", "length": 2, "filename": "a.txt"}\nhi\n'


@pytest.fixture(autouse=True)
def fresh_limits() -> None:
    intake.LIMIT.buckets.clear()  # project ids repeat from one test to the next
    keys.forget_all()


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


class Failing(Writer):
    """A real writer whose database fails once `failing` is set."""

    failing = False

    def write(self, batch: list[Job], again: bool = True) -> list[Answer | None]:
        if self.failing:
            raise RuntimeError("the disk went away")
        return super().write(batch, again)


class Django:
    """Django's app, counting the requests it answers: intake.refusal says why on both
    paths, so only this count tells the fast route answered a refusal."""

    def __init__(self) -> None:
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.answered += 1
        await django_app(scope, receive, send)


@pytest.fixture
def django() -> Django:
    return Django()


@pytest.fixture
def served(django: Django) -> Iterator[tuple[int, Ingest]]:
    app = Ingest(django, Failing(), fast=[fastroute.ROUTE])
    with serving(app) as port:
        yield port, app
        app.writer.stop()


def post(port: int, project: Project, key: str = "", body: bytes = EVENT) -> bytes:
    auth = f"X-Sentry-Auth: Sentry sentry_version=7, sentry_key={key or project.public_key}"
    return raw(port, "POST", f"/api/{project.pk}/envelope/", body, auth)


def reason(answer: bytes) -> str:
    """X-Sentry-Error, which is the body as Django's view gives it."""
    said = header(answer, "X-Sentry-Error")
    assert said is not None, answer
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert said == body.decode().strip(), answer
    return said


def test_the_fast_routes_rate_limit_and_quota_refusals_say_why(
    project: Project, served: tuple[int, Ingest], django: Django, settings: Any
) -> None:
    port, _ = served
    settings.ERRORS_RATE_LIMIT = 0.1  # one at once, then one every ten seconds
    assert status(post(port, project)) == 200  # Django's; the fast route takes the next
    assert django.answered == 1
    limited = post(port, project)
    assert status(limited) == 429
    assert django.answered == 1
    assert json.loads(reason(limited)) == {
        "detail": "refused: sent faster than the rate limit; send again later"
    }
    settings.ERRORS_RATE_LIMIT = 1000
    project.hourly_quota = 1
    project.save()
    time.sleep(spooled.REFRESH_SECONDS)  # as long as the spool keeps a quota it read
    over = post(port, project)
    assert status(over) == 429
    assert django.answered == 1
    assert "over the hourly quota" in reason(over)
    assert Event.objects.count() == 1


def test_a_key_revoked_by_another_process_is_refused_with_why(
    project: Project, served: tuple[int, Ingest], django: Django
) -> None:
    port, _ = served
    assert status(post(port, project)) == 200  # Django's, and the key is known now
    assert django.answered == 1
    # As another web process revokes it: this one still knows the key (keys.py keeps it a
    # second), its spool refuses once it looked again.
    Project.objects.filter(pk=project.pk).update(key_revoked=True)
    time.sleep(spooled.REFRESH_SECONDS)
    revoked = post(port, project)
    assert status(revoked) == 403
    assert django.answered == 1
    assert "revoked" in reason(revoked)


def test_a_database_failure_on_the_fast_route_says_why(
    project: Project, served: tuple[int, Ingest], django: Django, monkeypatch: Any
) -> None:
    port, app = served
    assert status(post(port, project)) == 200  # Django's
    assert isinstance(app.writer, Failing)
    app.writer.failing = True  # for what the writer stores: an envelope with attachments
    failed = post(port, project, body=WITH_ATTACHMENT)
    assert status(failed) == 503
    assert "could not store the event" in reason(failed)

    def fails(*args: Any) -> None:
        raise OperationalError("the disk went away")

    # And for what the spool keeps: its look at the project's quota.
    monkeypatch.setattr(spooled, "stored_and_quota", fails)
    time.sleep(spooled.REFRESH_SECONDS)
    failed = post(port, project)
    assert status(failed) == 503
    assert django.answered == 1
    assert "could not store the event" in reason(failed)


def test_djangos_refusals_say_why_as_before(
    project: Project, served: tuple[int, Ingest], django: Django
) -> None:
    port, _ = served
    wrong = post(port, project, key="0" * 32)
    assert status(wrong) == 403
    assert "unknown project or key" in reason(wrong)
    big = raw(port, "POST", f"/api/{project.pk}/envelope/", b"x" * (2 * 2**20))
    assert status(big) == 413
    assert "over 1024 KiB" in reason(big)
    assert django.answered == 2
