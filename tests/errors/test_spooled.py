"""The intake's spool (onwatch/errors/spooled.py) and its digest: an envelope answered 200
is kept sealed in the spool and stored once, whatever is killed when; a record cut by a
killed writer is skipped with a logged line, the others kept; a disk that cannot take
the record is a 503 that says so, and loses nothing accepted before; quota and refusals
count as they did when the queue was in the database."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connections
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.ingest import spool
from onwatch.core.ingest.spool import SpoolFull
from onwatch.errors import digest, intake, services, spooled
from onwatch.errors.models import Event, Project, SpoolCursor, Tally
from tests.support.errors import digested_after_restart, killed_once_storing, onwatch_with_a_project
from tests.support.fixtures import make_org
from tests.support.procs import Running, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_limits")]


def shop() -> Project:
    return services.add_project(make_org(), "shop", SYSTEM)


def envelope(n: int, secret: str = "") -> bytes:
    event = {"event_id": f"{n:032x}", "message": f"boom {n}", "extra": {"note": secret}}
    return b'{}\n{"type": "event"}\n' + json.dumps(event).encode() + b"\n"


def waiting(project: Project, n: int, secret: str = "") -> intake.Waiting:
    return intake.Waiting(project.pk, project.public_key, "192.0.2.9", "", envelope(n, secret), 1)


def take(project: Project, n: int) -> int:
    return spooled.take(waiting(project, n), timezone.now()).status


def digest_all() -> None:
    while digest.digest():
        pass


def stored() -> list[str]:
    return sorted(Event.objects.values_list("event_id", flat=True))


def counted() -> dict[tuple[str, str], int]:
    return {(t.what, t.detail): t.count for t in Tally.objects.all()}


def test_an_envelope_is_answered_once_spooled_and_stored_by_the_digest() -> None:
    project = shop()
    assert [take(project, n) for n in range(3)] == [200, 200, 200]
    assert not Event.objects.exists()  # answered, not stored yet
    digest_all()
    assert stored() == [f"{n:032x}" for n in range(3)]
    assert counted() == {("stored", ""): 3}


def test_the_spool_holds_the_body_sealed_not_as_sent() -> None:
    project = shop()
    spooled.take(waiting(project, 1, "hunter2-in-the-body"), timezone.now())
    on_disk = b"".join(p.read_bytes() for p in spooled.folder().glob("*.spool"))
    assert b"hunter2-in-the-body" not in on_disk and b"boom 1" not in on_disk
    assert len(on_disk) > len(envelope(1, "hunter2-in-the-body"))


def cut_writer(project_id: int, key: str) -> None:
    """A web process killed while it appended its third envelope."""
    project = Project(pk=project_id, public_key=key)
    try:
        for n in (1, 2):
            spooled.take(waiting(project, n), timezone.now())
        whole = spooled.packed(spooled.Entry(project_id, timezone.now(), 1, body=envelope(3)))
        os.write(spooled.appender().current(), spool.framed(whole)[:50])
    finally:
        os._exit(0)


def test_a_record_cut_by_a_killed_writer_is_skipped_with_a_line_and_the_others_kept(
    caplog: Any,
) -> None:
    project = shop()
    connections.close_all()  # not shared with the fork
    fork = multiprocessing.get_context("fork")
    proc = fork.Process(target=cut_writer, args=(project.pk, project.public_key))
    proc.start()
    proc.join()
    [name] = spool.files(spooled.folder())
    with caplog.at_level(logging.WARNING, logger="onwatch.errors.digest"):
        digest_all()
    assert stored() == [f"{1:032x}", f"{2:032x}"]
    assert f"the spool file {name} ends in a record cut short" in caplog.text
    assert "50 bytes skipped" in caplog.text
    assert spool.files(spooled.folder()) == []  # read to its end and removed
    assert not SpoolCursor.objects.exists()


def test_a_digest_killed_before_its_commit_stores_each_envelope_once(monkeypatch: Any) -> None:
    project = shop()
    for n in range(30):
        take(project, n)
    real = services.store_events
    calls = []

    def dies_in_the_second_batch(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-digest")  # not an Exception: nothing catches it
        real(*args)

    monkeypatch.setattr(services, "store_events", dies_in_the_second_batch)
    assert digest.digest() == digest.BATCH
    with pytest.raises(KeyboardInterrupt):
        digest.digest()
    assert len(stored()) == digest.BATCH  # the first batch's commit holds
    monkeypatch.setattr(services, "store_events", real)
    digest_all()
    assert stored() == [f"{n:032x}" for n in range(30)]
    assert counted() == {("stored", ""): 30}


def test_a_spool_that_cannot_be_written_answers_503_and_keeps_what_it_took(
    monkeypatch: Any,
) -> None:
    project = shop()
    assert take(project, 1) == 200

    def disk_full(self: Any, payload: bytes) -> tuple[str, int]:
        raise SpoolFull(28, "no space left")

    monkeypatch.setattr(spool.Spool, "append", disk_full)
    answer = spooled.take(waiting(project, 2), timezone.now())
    assert answer.status == 503
    said = json.loads(answer.body)["detail"]
    assert said == (
        "onwatch could not store the event: writing to its data folder failed (is the disk "
        "full? see the server log); send it again"
    )
    monkeypatch.undo()
    digest_all()
    assert stored() == [f"{1:032x}"]


def test_the_quota_counts_what_is_spooled_and_not_yet_stored() -> None:
    project = shop()
    project.hourly_quota = 3
    project.save()
    assert [take(project, n) for n in range(5)] == [200, 200, 200, 429, 429]
    digest_all()
    assert [take(project, n) for n in range(5, 7)] == [429, 429]  # now counted as stored
    digest_all()
    assert stored() == [f"{n:032x}" for n in range(3)]
    assert counted() == {("stored", ""): 3, ("refused", "over_quota"): 4}


def test_a_refusal_says_when_to_come_back_and_is_counted_by_the_digest() -> None:
    project = shop()
    w = waiting(project, 1)
    w.refused = "rate_limited"
    answer = spooled.take(w, timezone.now())
    assert answer.status == 429
    assert dict(answer.headers)[b"X-Sentry-Rate-Limits"] == b"1::project:rate_limited"
    assert not Tally.objects.exists()
    digest_all()
    assert counted() == {("refused", "rate_limited"): 1}


def test_a_record_that_is_no_entry_is_logged_and_the_rest_stored(caplog: Any) -> None:
    project = shop()
    take(project, 1)
    spooled.appender().append(b"not sealed by onwatch")
    take(project, 2)
    with caplog.at_level(logging.ERROR, logger="onwatch.errors.digest"):
        digest_all()
    assert stored() == [f"{1:032x}", f"{2:032x}"]
    assert "cannot be read" in caplog.text


def test_a_finished_file_read_to_its_end_is_removed_with_its_cursor() -> None:
    project = shop()
    take(project, 1)
    name = spooled.appender().name
    digest_all()
    assert spool.files(spooled.folder()) == [name]  # still this process's: kept
    assert SpoolCursor.objects.get(name=name).offset == spool.size(spooled.folder() / name)
    spooled.appender().close()
    digest_all()
    assert spool.files(spooled.folder()) == [] and not SpoolCursor.objects.exists()
    assert spooled.waiting() == 0


def test_waiting_counts_the_bytes_not_yet_digested(tmp_path: Path) -> None:
    project = shop()
    take(project, 1)
    assert spooled.waiting() == spool.size(spooled.folder() / spooled.appender().name)
    digest_all()
    assert spooled.waiting() == 0


def test_a_key_revoked_or_a_project_deleted_elsewhere_is_refused_once_looked_again() -> None:
    project = shop()
    assert take(project, 1) == 200
    Project.objects.filter(pk=project.pk).update(key_revoked=True)  # as another process does
    time.sleep(spooled.REFRESH_SECONDS)
    answer = spooled.take(waiting(project, 2), timezone.now())
    assert answer.status == 403
    assert json.loads(answer.body) == {"detail": "this project's key was revoked: use its new DSN"}
    Project.objects.filter(pk=project.pk).delete()
    time.sleep(spooled.REFRESH_SECONDS)
    assert take(project, 3) == 403
    digest_all()  # the project's spooled envelope went with it
    assert not Event.objects.exists()


def test_a_database_that_cannot_say_the_quota_is_a_503_that_keeps_nothing(
    monkeypatch: Any,
) -> None:
    project = shop()

    def fails(*args: Any) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(spooled, "stored_and_quota", fails)
    answer = spooled.take(waiting(project, 1), timezone.now())
    assert answer.status == 503
    assert json.loads(answer.body)["detail"].startswith("onwatch could not store the event")
    assert spooled.waiting() == 0


def test_a_full_spool_answers_429_and_the_refusals_are_counted(settings: Any) -> None:
    settings.ERRORS_QUEUE_MAX = 2  # envelopes this process spooled, not yet stored
    project = shop()
    assert [take(project, n) for n in range(4)] == [200, 200, 429, 429]
    digest_all()
    time.sleep(spooled.REFRESH_SECONDS)  # a look at what the digest stored is that recent
    assert take(project, 5) == 200  # stored: room again
    digest_all()
    assert counted() == {("stored", ""): 3, ("refused", "queue_full"): 2}


SENT = 300


def counts(env: dict[str, str]) -> tuple[int, int, int]:
    """Events stored, events counted in their issues, and bytes spooled not yet stored."""
    sql = (
        "SELECT (SELECT count(*) FROM errors_event), "
        "(SELECT coalesce(sum(event_count), 0) FROM errors_issue)"
    )
    cursors_sql = 'SELECT name, "offset" FROM errors_spoolcursor'
    url = env.get("DATABASE_URL")
    if url:
        with psycopg.connect(url) as conn:
            row, at = conn.execute(sql).fetchone(), dict(conn.execute(cursors_sql).fetchall())
    else:
        path = Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20) as conn:
            row, at = conn.execute(sql).fetchone(), dict(conn.execute(cursors_sql).fetchall())
    assert row is not None
    folder = Path(env["ONWATCH_DATA_DIR"]) / "spool" / "errors"
    waiting = sum(max(0, spool.size(folder / n) - at.get(n, 0)) for n in spool.files(folder))
    return int(row[0]), int(row[1]), waiting


def test_a_web_process_killed_mid_digest_of_its_spool_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    with onwatch_with_a_project(tmp_path) as (env, key):
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            url = f"{web.base_url}/api/1/envelope/?sentry_key={key}"
            for n in range(SENT):
                request = urllib.request.Request(url, envelope(n))
                with urllib.request.urlopen(request, timeout=30) as answer:
                    assert answer.status == 200
            killed_once_storing(web, lambda: counts(env)[0])  # mid-digest: more spooled
        killed_at = counts(env)
        assert killed_at[0] < SENT and killed_at[2] > 0, f"the digest was not cut: {killed_at}"
        digested_after_restart(env, lambda: counts(env)[2])
        assert counts(env) == (SENT, SENT, 0)
