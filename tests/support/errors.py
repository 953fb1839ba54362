"""Error projects, the events SDKs send and onwatch serving them, for the errors app's tests:
plain functions, and the fixtures (registered for every test in tests/conftest.py) that
those tests share. A test module's own fixture of the same name wins over these."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest import spool
from onwatch.core.ingest.app import Ingest
from onwatch.core.models import Organization
from onwatch.errors import fastroute, intake, keys, services, spooled
from onwatch.errors.models import Project, Queued, SpoolCursor
from tests.support.asgi import serving
from tests.support.procs import Running, isolated, run, wait_http


def crash(release: str = "", message: str = "boom", **more: Any) -> dict[str, Any]:
    """An event of one KeyError, as an SDK sends it; `more` adds fields of the event."""
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": "KeyError", "value": message}]},
        **more,
    }


def incoming(project: Project, *events: dict[str, Any]) -> intake.Incoming:
    """`events` of one request, as the intake hands them on to be stored."""
    return intake.Incoming(project.pk, project.public_key, "192.0.2.9", list(events))


def send(project: Project, *events: dict[str, Any], at: datetime | None = None) -> None:
    """Store `events` of one request as the ingest writer does, received `at` (now)."""
    services.take(incoming(project, *events), at or timezone.now())


def waits_on_a_lock() -> bool:
    """Whether a connection to this PostgreSQL database waits for a lock (one sender's
    write held up by another's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        found = cursor.fetchone()
        return bool(found and found[0])


def digested(timeout: float = 30.0) -> None:
    """Wait until the digest has taken every spooled envelope: a 200 of the fast route means
    spooled, and a test that reads what was stored reads it once digested."""
    deadline = time.monotonic() + timeout
    while spooled.waiting() or Queued.objects.exists():
        assert time.monotonic() < deadline, "queued envelopes were not digested in time"
        time.sleep(0.01)


def spooled_envelopes() -> int:
    """Envelopes in the spool that the digest has not stored (refusals not counted)."""
    folder = spooled.folder()
    found = 0
    for name in spool.files(folder):
        start = SpoolCursor.objects.filter(name=name).values_list("offset", flat=True).first()
        for record in spool.read(folder / name, start or 0, 10**9).records:
            found += not spooled.unpacked(record.payload).refused
    return found


@cache
def django_app() -> ASGIHandler:
    return get_asgi_application()


@contextmanager
def serving_intake() -> Iterator[int]:
    """A real uvicorn serving what SDKs send to as `onwatch web` does: the ingest layer with
    the errors' fast route in front of Django. Its port; the layer's writer stopped after."""
    app = Ingest(django_app(), fast=[fastroute.ROUTE])
    with serving(app) as port:
        yield port
        app.writer.stop()


# --- a real onwatch killed while it digests (test_queue.py, test_spooled.py) ------------

OWNER_PASSWORD = "a long enough password for the owner"


@contextmanager
def onwatch_with_a_project(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A real onwatch of one web worker, with an owner and the project "shop" (id 1): its
    environment and the project's DSN key. Migrated from the run's template: its first
    start is no subject here, and migrating anew cost each test ~5 s of CPU."""
    extra = {"ONWATCH_WEB_WORKERS": "1", "ONWATCH_OWNER_PASSWORD": OWNER_PASSWORD}
    with isolated(tmp_path, migrated=True, **extra) as env:
        assert run(["createowner", "--email", "owner@acme.example"], env).returncode == 0
        added = run(["errors", "add-project", "shop"], env)
        assert added.returncode == 0, added.stderr
        yield env, added.stdout.strip().split("//")[1].split("@")[0]


def killed_once_storing(web: Running, stored: Callable[[], int]) -> None:
    """SIGKILL `web` (its whole group) as soon as its digest has stored an event past the
    first (which Django's own view stored), so a batch is stored and more wait."""
    deadline = time.monotonic() + 60
    while (found := stored()) <= 1:
        assert time.monotonic() < deadline, f"the digest stored nothing in 60 s: {found}"
        time.sleep(0.002)
    os.killpg(web.proc.pid, signal.SIGKILL)
    web.proc.wait()


def digested_after_restart(env: dict[str, str], waiting: Callable[[], int]) -> None:
    """Start onwatch's web again and wait until its digest has left nothing `waiting`."""
    with Running(["web"], env) as web:
        wait_http(web.base_url + "/health/", timeout=60)  # its first request: the digest starts
        deadline = time.monotonic() + 60
        while found := waiting():
            assert time.monotonic() < deadline, f"still waiting after 60 s: {found}"
            time.sleep(0.05)


@pytest.fixture
def project(org: Organization) -> Project:
    """A project whose new issues raise no alert: for tests of what becomes of events."""
    made = services.add_project(org, "shop", SYSTEM)
    made.alert_new_issues = False
    made.save()
    return made


@pytest.fixture(autouse=True)
def fresh_spool() -> None:
    """No spooled envelope of an earlier test: the data folder lasts the session, the
    database (and the digest's cursors in it) one test."""
    spooled.forget()


@pytest.fixture
def fresh_limits() -> None:
    """The intake's rate limits and known keys forgotten: tests with a transactional
    database make projects of the same ids one after another."""
    intake.LIMIT.buckets.clear()
    keys.forget_all()
