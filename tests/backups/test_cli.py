"""`onwatch restore` as people run it: a real process against its own database."""

from __future__ import annotations

import secrets
from pathlib import Path

from psycopg import sql

from tests.support.backups import PgSource, admin, make_plan, pg_db, pg_parts, sqlite_file
from tests.support.child import backups as child_backups
from tests.support.child import call
from tests.support.procs import run

__all__ = ["pg_db"]


def test_it_restores_a_sqlite_snapshot_with_yes_and_audits_it(
    migrated_env: dict[str, str], tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    make_plan(migrated_env, "sqlite", tmp_path / "repo", path=str(db))
    target = tmp_path / "restored.sqlite3"
    done = run(["restore", "nightly", "--to", str(target), "--yes"], migrated_env)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout.splitlines()[-1]
    import sqlite3

    with sqlite3.connect(target) as c:
        assert c.execute("SELECT count(*) FROM notes").fetchone() == (40,)
    out = call(child_backups.print_restore_audit, migrated_env)
    assert out.split() == ["cli", "nightly", str(target)]
    # On the plan's page like a restore asked for in the UI, asked for by "cli".
    rows = call(child_backups.print_restore_rows, migrated_env)
    assert rows.split() == ["cli", "succeeded", str(target), "cli"]


def test_without_yes_it_asks_and_a_no_restores_nothing(
    migrated_env: dict[str, str], tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    make_plan(migrated_env, "sqlite", tmp_path / "repo", path=str(db))
    target = tmp_path / "restored.sqlite3"
    done = run(["restore", "nightly", "--to", str(target)], migrated_env, input="n\n")
    assert done.returncode == 2
    assert done.stderr.strip() == "onwatch: nothing was restored (answer yes, or pass --yes)"
    assert not target.exists()


def test_it_restores_postgresql_into_a_new_database_only(
    migrated_env: dict[str, str], tmp_path: Path, pg_db: PgSource
) -> None:
    host, port, user = pg_parts()
    make_plan(
        migrated_env,
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
        done = run(["restore", "nightly", "--to", url, "--yes"], migrated_env)
        assert done.returncode == 0, done.stderr
        with PgSource(name).connect() as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone() == (250,)
        again = run(["restore", "nightly", "--to", url, "--yes"], migrated_env)
        assert again.returncode == 2
        assert f"the database {name} exists already" in again.stderr
        rows = call(child_backups.print_restore_rows, migrated_env).splitlines()
        assert [r.split()[1] for r in rows] == ["succeeded", "failed"]  # not silently
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_an_unknown_plan_is_one_clear_line(migrated_env: dict[str, str]) -> None:
    done = run(["restore", "nope", "--to", "/tmp/x", "--yes"], migrated_env)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "onwatch: there is no backup plan 'nope'; see the names under Backups"
    )
