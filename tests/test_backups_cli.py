"""`onwatch restore` as people run it: a real process against its own database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tests.procs import django, isolated, run
from tests.test_backups_support import PgSource, admin, pg_db, pg_parts, sqlite_file

__all__ = ["pg_db"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with isolated(tmp_path) as env:
        done = run(["migrate"], env)
        assert done.returncode == 0, done.stderr
        yield env


def make_plan(env: dict[str, str], kind: str, repo: Path, **source: object) -> None:
    """A plan and one good backup of it, made the way onwatch makes them."""
    django(
        f"""
        from onwatch.backups import services
        from onwatch.backups.runs import run_backup
        from onwatch.core.models import Organization
        org = Organization.objects.create(name="Acme")
        repository = services.add_repository(org, "local", {str(repo)!r}, provider="here")
        source = services.add_source(org, "app", {kind!r}, **{source!r})
        plan = services.add_plan(source, "nightly", [repository])
        run = run_backup(plan, print)
        assert run.state == "succeeded", run.error
        """,
        env,
    )


def test_it_restores_a_sqlite_snapshot_with_yes_and_audits_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    make_plan(env, "sqlite", tmp_path / "repo", path=str(db))
    target = tmp_path / "restored.sqlite3"
    done = run(["restore", "nightly", "--to", str(target), "--yes"], env)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout.splitlines()[-1]
    import sqlite3

    with sqlite3.connect(target) as c:
        assert c.execute("SELECT count(*) FROM notes").fetchone() == (40,)
    out = django(
        """
        from onwatch.core.models import AuditEntry
        e = AuditEntry.objects.get(action="backup-restored")
        print(e.actor, e.target, e.data["to"])
        """,
        env,
    )
    assert out.split() == ["cli", "nightly", str(target)]


def test_without_yes_it_asks_and_a_no_restores_nothing(env: dict[str, str], tmp_path: Path) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    make_plan(env, "sqlite", tmp_path / "repo", path=str(db))
    target = tmp_path / "restored.sqlite3"
    done = run(["restore", "nightly", "--to", str(target)], env, input="n\n")
    assert done.returncode == 2
    assert done.stderr.strip() == "onwatch: nothing was restored (answer yes, or pass --yes)"
    assert not target.exists()


def test_it_restores_postgresql_into_a_new_database_only(
    env: dict[str, str], tmp_path: Path, pg_db: PgSource
) -> None:
    host, port, user = pg_parts()
    make_plan(
        env,
        "postgresql",
        tmp_path / "repo",
        host=host,
        port=port,
        database=pg_db.name,
        username=user,
    )
    name = f"bk_restored_{secrets.token_hex(4)}"
    url = f"postgresql://{user}@{host}:{port}/{name}"
    try:
        done = run(["restore", "nightly", "--to", url, "--yes"], env)
        assert done.returncode == 0, done.stderr
        with PgSource(name).connect() as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone() == (250,)
        again = run(["restore", "nightly", "--to", url, "--yes"], env)
        assert again.returncode == 2
        assert f"the database {name} exists already" in again.stderr
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_an_unknown_plan_is_one_clear_line(env: dict[str, str]) -> None:
    done = run(["restore", "nope", "--to", "/tmp/x", "--yes"], env)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "onwatch: there is no backup plan 'nope'; see the names under Backups"
    )
