"""`onwatch restore` into a PostgreSQL server that does not answer (a closed port): one
clear line and exit code 2, no traceback, and nothing lost — the same snapshot restores
once the URL is right."""

from __future__ import annotations

import secrets
from pathlib import Path

from psycopg import sql

from tests.support.backups import PgSource, admin, make_plan, pg_db, pg_parts
from tests.support.procs import free_port, run

__all__ = ["pg_db"]


def test_a_restore_into_an_unreachable_server_is_one_clear_line_and_loses_nothing(
    migrated_env: dict[str, str], tmp_path: Path, pg_db: PgSource
) -> None:
    host, port, user = pg_parts()
    source = {"host": host, "port": port, "database": pg_db.name, "username": user}
    make_plan(migrated_env, "postgresql", tmp_path / "repo", **source)
    name = f"bk_restored_{secrets.token_hex(4)}"
    closed = free_port()  # nothing listens there
    unreachable = f"postgresql://{user}@127.0.0.1:{closed}/{name}"
    try:
        refused = run(["restore", "nightly", "--to", unreachable, "--yes"], migrated_env)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert lines[0].startswith(
            f"onwatch: cannot create the database {name} on the PostgreSQL server at "
            f"127.0.0.1:{closed} ("
        ), lines[0]
        assert lines[0].endswith("nothing was restored or changed"), lines[0]
        done = run(
            ["restore", "nightly", "--to", f"postgresql://{user}@{host}:{port}/{name}", "--yes"],
            migrated_env,
        )
        assert done.returncode == 0, done.stderr
        with PgSource(name).connect() as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone() == (250,)
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
