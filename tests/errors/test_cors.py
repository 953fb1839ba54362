"""CORS on every answer where browser SDKs send (onwatch/errors/middleware.py): a browser
hands the SDK an answer without it as a network error, so the SDK could not read why it
was refused (Retry-After, X-Sentry-Rate-Limits) and would send on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from onwatch.core.audit import SYSTEM
from onwatch.errors import protocol, services, spooled
from onwatch.errors.models import Project
from tests.support.asgi import header, raw, status
from tests.support.errors import serving_intake
from tests.support.fixtures import make_org

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_limits")]
EVENT = b'{}\n{"type": "event"}\n{"message": "from a browser"}\n'
ORIGIN = "https://shop.example"


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


def readable_across_origins(answer: dict[str, str]) -> None:
    assert answer.get("access-control-allow-origin") == "*", answer
    exposed = {h.strip().lower() for h in answer["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-sentry-rate-limits", "x-sentry-error"} <= exposed


def headers_of(response: object) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}  # type: ignore[attr-defined]


def test_djangos_own_404_and_500_carry_cors(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(raise_request_exception=False, HTTP_ORIGIN=ORIGIN)
    missing = client.post("/api/shop/envelope/", EVENT, content_type="text/plain")
    assert missing.status_code == 404
    readable_across_origins(headers_of(missing))

    def broken(*args: object) -> None:
        raise RuntimeError("the database went away")  # any failure while storing

    monkeypatch.setattr(services, "take_all", broken)
    query = f"?sentry_key={project.public_key}"
    failed = client.post(f"/api/{project.pk}/envelope/{query}", EVENT, content_type="text/plain")
    assert failed.status_code == 500
    readable_across_origins(headers_of(failed))


def test_refusals_carry_cors_on_both_endpoints(project: Project) -> None:
    client = Client(HTTP_ORIGIN=ORIGIN)
    query = f"?sentry_key={project.public_key}"
    project.hourly_quota = 1
    project.save()
    stored = json.dumps({"message": "the first"}).encode()
    ok = client.post(f"/api/{project.pk}/store/{query}", stored, content_type="text/plain")
    assert ok.status_code == 200
    over = client.post(f"/api/{project.pk}/store/{query}", stored, content_type="text/plain")
    assert over.status_code == 429 and over["Retry-After"]
    readable_across_origins(headers_of(over))
    big = b"x" * (protocol.MAX_BODY + 1)
    too_big = client.post(f"/api/{project.pk}/envelope/{query}", big, content_type="text/plain")
    assert too_big.status_code == 413
    readable_across_origins(headers_of(too_big))
    wrong_key = f"/api/{project.pk}/envelope/?sentry_key={'0' * 32}"
    wrong = client.post(wrong_key, EVENT, content_type="text/plain")
    assert wrong.status_code in (401, 403)
    readable_across_origins(headers_of(wrong))


@pytest.fixture
def onwatch() -> Iterator[int]:
    with serving_intake() as port:
        yield port


def test_the_fast_routes_refusals_carry_cors(project: Project, onwatch: int) -> None:
    path = f"/api/{project.pk}/envelope/?sentry_key={project.public_key}"
    # The first answer is Django's (the layer learns its headers), the next the layer's.
    for _ in range(2):
        assert status(raw(onwatch, "POST", path, EVENT, f"Origin: {ORIGIN}")) == 200
    project.hourly_quota = 2
    project.save()
    time.sleep(spooled.REFRESH_SECONDS)  # as long as the spool keeps a quota it read
    over = raw(onwatch, "POST", path, EVENT, f"Origin: {ORIGIN}")
    assert status(over) == 429 and header(over, "X-Sentry-Rate-Limits")
    names = ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers")
    readable_across_origins({n.lower(): header(over, n) or "" for n in names})
