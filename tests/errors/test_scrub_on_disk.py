"""Every kind of secret, sent through the real sentry-sdk to a real `onwatch web`, never
reaches the database's files: their bytes are searched after the server stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support import sentry_send
from tests.support.procs import ROOT, Running, django, isolated, run, wait_http
from tests.support.receivers import wait_until

PASSWORD = "a long enough password for the owner"


def stored_bytes(env: dict[str, str]) -> bytes:
    """The database as stored: SQLite's files, or PostgreSQL's rows as a dump would."""
    url = env.get("DATABASE_URL")
    if not url:
        data = Path(env["ONWATCH_DATA_DIR"])
        return b"".join(p.read_bytes() for p in data.glob("*.sqlite3*"))
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        select = sql.SQL("SELECT * FROM {}")
        return b"".join(
            str(conn.execute(select.format(sql.Identifier(t))).fetchall()).encode() for t in tables
        )


def test_no_secret_sent_through_the_sdk_reaches_the_database_files(tmp_path: Path) -> None:
    with isolated(
        tmp_path, migrated=True, ONWATCH_WEB_WORKERS="1", ONWATCH_OWNER_PASSWORD=PASSWORD
    ) as env:
        made = run(["createowner", "--email", "owner@acme.example", "--org", "Acme"], env)
        assert made.returncode == 0, made.stderr
        added = run(["errors", "add-project", "shop"], env)
        assert added.returncode == 0, added.stderr
        dsn = added.stdout.strip()
        assert dsn.startswith("http://") and dsn.endswith("/1"), dsn
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            for scenario in ("secrets", "secrets", "in-text", "in-text"):
                # The first through Django (its first answer), the others the fast route.
                sent = subprocess.run(
                    [sys.executable, "-m", "tests.support.sentry_send", dsn, scenario],
                    cwd=ROOT, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert sent.returncode == 0 and "flushed" in sent.stdout, sent.stderr
                assert len(sent.stdout.split()) == (2 if scenario == "secrets" else 4)
            listed = run(["errors", "list"], env)
        stored = stored_bytes(env)
    assert b"could not be paid" in stored, "the events were stored"
    assert stored.count(b"ada@example.com") >= 2, "both events were stored"
    for secret in sentry_send.ALL:
        assert secret.encode() not in stored, secret
    assert b"login failed: password=" in stored, "the in-text events were stored"
    assert b"could not fetch https://pay.example/charge?password=" in stored
    assert b"https://api.example/stock?api_key=" in stored, "with their breadcrumbs"
    for kind, secret in sentry_send.IN_TEXT.items():
        assert secret.encode() not in stored, kind
    assert sentry_send.NOT_A_CARD.encode() in stored
    assert listed.stdout.strip() == f"shop\t{dsn}"


def send_all_scenarios(dsn: str) -> None:
    for scenario in ("secrets", "secrets", "in-text", "in-text"):
        sent = subprocess.run(
            [sys.executable, "-m", "tests.support.sentry_send", dsn, scenario],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sent.returncode == 0 and "flushed" in sent.stdout, sent.stderr


def queued(env: dict[str, str]) -> int:
    found = django("from onwatch.errors.models import Queued; print(Queued.objects.count())", env)
    return int(found)


def test_no_secret_reaches_the_files_while_events_wait_in_the_queue(tmp_path: Path) -> None:
    with isolated(
        tmp_path, migrated=True, ONWATCH_WEB_WORKERS="1", ONWATCH_OWNER_PASSWORD=PASSWORD
    ) as env:
        assert run(["createowner", "--email", "owner@acme.example"], env).returncode == 0
        added = run(["errors", "add-project", "shop"], env)
        assert added.returncode == 0, added.stderr
        # A web process that takes events and leaves them queued, undigested.
        with Running(["web"], {**env, "ONWATCH_INGEST_DIGEST": "0"}) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            send_all_scenarios(added.stdout.strip())
        waiting = queued(env)
        while_queued = stored_bytes(env)
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)  # the digest starts
            wait_until(lambda: queued(env) == 0, timeout=60, what="the queue digested")
        digested = stored_bytes(env)
    # All but the first request (answered by Django, stored at once) waited in the queue.
    assert waiting == 7  # 8 events, one envelope each
    assert digested.count(b"login failed: password=") >= 2, "the queued events were stored"
    for stored in (while_queued, digested):
        for secret in (*sentry_send.ALL, *sentry_send.IN_TEXT.values()):
            assert secret.encode() not in stored, secret


def test_adding_a_project_twice_is_one_clear_line(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_OWNER_PASSWORD=PASSWORD) as env:
        assert run(["createowner", "--email", "owner@acme.example"], env).returncode == 0
        assert run(["errors", "add-project", "shop"], env).returncode == 0
        again = run(["errors", "add-project", "shop"], env)
    assert again.returncode == 2
    assert again.stderr == "onwatch: Another project is already called 'shop'\n"
