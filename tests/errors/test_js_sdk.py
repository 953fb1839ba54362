"""The real JavaScript SDKs against a real uvicorn serving onwatch (the ingest layer in
front of Django) on the test database: @sentry/node in a Node process of its own, and
@sentry/browser on a page of another origin in Chromium. Both from tests/errors/js, which
scripts/test installs with `npm ci`."""

from __future__ import annotations

import functools
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.asgi import get_asgi_application

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest.app import Ingest
from onwatch.errors import fastroute, intake, keys, services
from onwatch.errors.models import Event, Issue, Project, Tally
from tests.support.asgi import serving
from tests.support.browser import chromium
from tests.support.errors import digested
from tests.support.fixtures import make_org

pytestmark = pytest.mark.django_db(transaction=True)
django_app = get_asgi_application()
JS = Path(__file__).parent / "js"


@pytest.fixture(autouse=True)
def fresh_limits() -> None:
    assert (JS / "node_modules").is_dir(), "the SDKs are missing: run `npm ci` in tests/errors/js"
    intake.LIMIT.buckets.clear()  # project ids repeat from one test to the next
    keys.forget_all()
    intake._disk = (float("-inf"), False)


@pytest.fixture
def project() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


class Seen:
    """The requests onwatch got (method, path, query, headers), ahead of everything."""

    def __init__(self, app: Ingest) -> None:
        self.app = app
        self.requests: list[tuple[str, str, str, dict[str, str]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
            query = scope["query_string"].decode("latin-1")
            self.requests.append((scope["method"], scope["path"], query, headers))
        await self.app(scope, receive, send)


@pytest.fixture
def onwatch(project: Project) -> Iterator[tuple[int, Ingest]]:
    app = Ingest(django_app, fast=[fastroute.ROUTE])
    with serving(app) as port:
        taught(port, project)
        yield port, app
        app.writer.stop()


def taught(port: int, project: Project) -> None:
    """One envelope through Django first, so the SDK's events take the ingest layer's fast
    route, as they do once onwatch has answered its first: the JS SDKs send several at once,
    and Django's path, one transaction per request, meets the test database's shared-cache
    SQLite, which answers "table is locked" at once where onwatch's WAL file waits."""
    nothing = b'{}\n{"type": "client_report"}\n{"discarded_events": []}\n'
    url = f"http://127.0.0.1:{port}/api/{project.pk}/envelope/?sentry_key={project.public_key}"
    with urllib.request.urlopen(urllib.request.Request(url, nothing), timeout=10) as answer:
        assert answer.status == 200


def dsn(project: Project, port: int) -> str:
    return f"http://{project.public_key}@127.0.0.1:{port}/{project.pk}"


def node(dsn: str, scenario: str, count: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", "send.mjs", dsn, scenario, str(count)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )


def sent_ids(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[-1] == "flushed", done.stdout
    digested()
    return lines[:-1]


def test_node_exceptions_and_a_message_arrive_grouped_by_in_app_frames(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    port, app = onwatch
    sent = sent_ids(node(dsn(project, port), "crash", 4))
    assert len(sent) == 5
    assert sorted(Event.objects.values_list("event_id", flat=True)) == sorted(sent)
    # Four exceptions from two lines of checkout(), with four order numbers: one issue.
    crash = Issue.objects.get(grouped_by="in-app frames")
    assert crash.event_count == 4
    assert crash.title.startswith("TypeError: order")
    assert crash.culprit == "send in checkout"
    assert crash.first_release == "shop@2.0.1"
    # The SDK sends a message with a made-up exception to carry its stack: still a message.
    message = Issue.objects.get(grouped_by="message")
    assert message.title == "the nightly export found 3 orders without an invoice"
    assert message.culprit == "send in ?"  # the top level of send.mjs
    for event in Event.objects.all():
        assert event.data["environment"] == "staging"
        assert event.data["release"] == "shop@2.0.1"
        assert event.data["platform"] == "node"
    # @sentry/node sends its bodies chunked, without a Content-Length: the fast route
    # takes them all the same.
    assert app.served >= 5


def test_node_sends_a_big_event_gzipped_and_it_arrives_whole(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    [sent] = sent_ids(node(dsn(project, onwatch[0]), "big"))
    event = Event.objects.get(event_id=sent)
    assert event.data["extra"]["basket"] == "a line of the basket\n" * 2400


def test_node_reports_an_uncaught_error_before_it_exits(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    done = node(dsn(project, onwatch[0]), "uncaught")
    assert done.returncode == 1, done.stderr  # Node's own exit for an uncaught error
    [sent] = done.stdout.split()
    digested()
    event = Event.objects.get(event_id=sent)
    [exception] = event.data["exception"]["values"]
    assert exception["type"] == "TypeError"
    assert exception["mechanism"]["handled"] is False
    assert event.issue.culprit == "send in checkout"


def test_node_honours_the_429_of_an_exhausted_quota(
    project: Project, onwatch: tuple[int, Ingest]
) -> None:
    project.hourly_quota = 2
    project.save()
    sent = sent_ids(node(dsn(project, onwatch[0]), "quota", 6))
    assert len(sent) == 6  # the SDK made six events...
    assert Event.objects.count() == 2
    # ...sent the third, was refused with Retry-After and X-Sentry-Rate-Limits, and sent
    # none of the three after it.
    refused = Tally.objects.get(what="refused")
    assert (refused.detail, refused.count) == ("over_quota", 1)


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop() -> Iterator[int]:
    """The shop's own site: tests/errors/js (its page and node_modules) on a port of its
    own, so the page's origin is not onwatch's and the browser applies CORS."""
    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(JS)))
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site.server_port
    site.shutdown()
    site.server_close()


@pytest.mark.once  # about the browser's side; the node tests cover both databases
@pytest.mark.parametrize("preflight", [False, True], ids=["simple", "preflight"])
def test_the_browser_sdk_reports_an_error_from_a_page_of_another_origin(
    project: Project, shop: int, preflight: bool
) -> None:
    seen = Seen(Ingest(django_app, fast=[fastroute.ROUTE]))
    troubles: list[str] = []
    with serving(seen) as port:
        taught(port, project)
        seen.requests.clear()
        # The ORM only once the browser is closed: Playwright's loop runs in this thread.
        with chromium() as browser:
            page = browser.new_page()
            page.on("requestfailed", lambda r: troubles.append(f"{r.url}: {r.failure}"))
            page.on("console", lambda m: troubles.extend([m.text] if m.type == "error" else []))
            query = f"dsn={dsn(project, port)}" + ("&header=1" if preflight else "")
            page.goto(f"http://127.0.0.1:{shop}/page.html?{query}")
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            page.click("#buy")  # an error nothing catches
            assert page.evaluate("window.flush()") is True
            [sent] = page.evaluate("window.sent")
        digested()
        event = Event.objects.get(event_id=sent)
        seen.app.writer.stop()
    [exception] = event.data["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("RangeError", "basket total is -3.50")
    assert exception["mechanism"]["handled"] is False
    # The browser's own stack: the page's function, where it threw.
    [top] = [f for f in exception["stacktrace"]["frames"] if f.get("function") == "placeOrder"]
    assert top["filename"].startswith(f"http://127.0.0.1:{shop}/page.html")
    assert top["lineno"] > 0 and top["in_app"] is True
    assert event.data["release"] == "shop-web@3.1.0"
    assert event.data["request"]["url"].startswith(f"http://127.0.0.1:{shop}/page.html")
    assert event.issue.grouped_by == "in-app frames"
    assert event.issue.culprit == "/page.html in placeOrder"  # not the page's query (the DSN)
    posts = [r for r in seen.requests if r[0] == "POST"]
    # As the SDK sends it: the key in the query, from the shop's origin, no CSRF token.
    assert posts and all(f"sentry_key={project.public_key}" in q for _, _, q, _ in posts)
    assert all(h["origin"] == f"http://127.0.0.1:{shop}" for *_, h in posts)
    asked = [r for r in seen.requests if r[0] == "OPTIONS"]
    if preflight:
        assert asked and "x-shop-build" in asked[0][3]["access-control-request-headers"]
        assert all(h["x-shop-build"] == "42" for *_, h in posts)
    else:
        assert not asked  # text/plain and no header of its own: no preflight
    # A refused CORS answer shows only in the browser: a failed request, a console error.
    assert not troubles


@pytest.mark.once  # about the browser's side; the node tests cover both databases
def test_the_browser_sdk_reads_the_429_across_origins_and_waits(
    project: Project, shop: int
) -> None:
    project.hourly_quota = 1
    project.save()
    app = Ingest(django_app, fast=[fastroute.ROUTE])
    with serving(app) as port:
        taught(port, project)
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{shop}/page.html?dsn={dsn(project, port)}")
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            for _ in range(4):
                page.click("#buy")
                page.evaluate("window.flush()")
            made = page.evaluate("window.sent.length")
        digested()
        app.writer.stop()
    assert made == 4
    assert Event.objects.count() == 1
    # The page can read the 429 only when it carries onwatch's CORS headers too (else the
    # SDK sees a network error and sends on): one refusal, then nothing more sent.
    refused = Tally.objects.get(what="refused")
    assert (refused.detail, refused.count) == ("over_quota", 1)
