"""checks.check_source for PostgreSQL, SQLite and directory sources (MariaDB's are in
tests/backups/test_mariadb.py): the problems a form shows before the first run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.backups.checks import check_source
from onwatch.backups.models import Source, SourceKind
from onwatch.core import postgres
from onwatch.core.models import Organization
from tests.support.backups import PgSource, pg_db, pg_parts, sqlite_file
from tests.support.procs import free_port

pytestmark = pytest.mark.django_db
__all__ = ["pg_db"]


@pytest.fixture(scope="module")
def password_pg() -> Iterator[tuple[int, str]]:
    """A PostgreSQL server of its own that asks for passwords (the shared test server
    trusts everyone): its port and the password of user onwatch."""
    root = Path(tempfile.mkdtemp(prefix="onwatch-pgpw-"))
    password = "right-password"
    (root / "pw").write_text(password)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    bin_dir = Path(postgres.tool("pg_dump")).parent
    data, port = str(root / "data"), free_port()

    def tool(name: str, *args: str) -> None:
        subprocess.run([*as_postgres, str(bin_dir / name), *args], check=True, capture_output=True)

    tool("initdb", "-D", data, "-U", "onwatch", "--auth=scram-sha-256", f"--pwfile={root}/pw")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    tool("pg_ctl", "-D", data, "-l", str(root / "log"), "-w", "-o", options, "start")
    try:
        yield port, password
    finally:
        tool("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def pg_source(org: Organization, db: PgSource, **fields: object) -> Source:
    """The source unsaved, as the source form has it checked before saving: these tests
    try many variants of one source, which could not all be saved under one name."""
    host, port, user = pg_parts()
    found: dict[str, object] = {"host": host, "port": port, "database": db.name, "username": user}
    return Source(org=org, name="shop db", kind=SourceKind.POSTGRESQL, **{**found, **fields})


def test_a_good_postgresql_source_has_no_problems(org: Organization, pg_db: PgSource) -> None:
    assert check_source(pg_source(org, pg_db)) == []


def test_a_wrong_postgresql_password_is_one_clear_line(
    org: Organization, password_pg: tuple[int, str]
) -> None:
    port, password = password_pg

    def source(pw: str) -> list[str]:
        return check_source(
            Source(
                org=org,
                name="db",
                kind=SourceKind.POSTGRESQL,
                host="127.0.0.1",
                port=port,
                database="postgres",
                username="onwatch",
                password=pw,
            )
        )

    assert source(password) == []
    assert source("wrong") == [
        f"the server at 127.0.0.1:{port} refused user onwatch with this password; check them"
    ]
    assert source("") == [
        f"the server at 127.0.0.1:{port} wants a password for user onwatch; enter it"
    ]


def test_a_missing_database_user_or_server_is_named(org: Organization, pg_db: PgSource) -> None:
    host, port, _ = pg_parts()
    source = pg_source(org, pg_db, database="no_such_db_here")
    assert check_source(source) == [
        f"there is no database no_such_db_here on {host}:{port}; check its name"
    ]
    source = pg_source(org, pg_db, username="no_such_role")
    assert check_source(source) == [
        f"there is no user no_such_role on {host}:{port}; check the user name"
    ]
    source = pg_source(org, pg_db, port=free_port())
    [problem] = check_source(source)
    assert problem.startswith(f"cannot reach the PostgreSQL server at {host}:{source.port} (")
    assert "Connection refused" in problem
    source = pg_source(org, pg_db, scratch_url=f"postgresql://onwatch@{host}:{free_port()}/x")
    [problem] = check_source(source)
    assert problem.startswith("scratch server for drills: cannot reach the PostgreSQL server")


def test_a_pg_dump_older_than_the_server_is_explained(
    org: Organization, pg_db: PgSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pg_dump that reports an old version, in front of the real server.
    (tmp_path / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    (tmp_path / "pg_dump").chmod(0o755)
    monkeypatch.setenv("ONWATCH_PG_BIN_DIR", str(tmp_path))
    [problem] = check_source(pg_source(org, pg_db))
    assert problem.startswith("pg_dump is version 9 but the server runs PostgreSQL ")
    assert "ONWATCH_PG_BIN_DIR" in problem
    monkeypatch.setenv("ONWATCH_PG_BIN_DIR", str(tmp_path / "nothing"))
    [problem] = check_source(pg_source(org, pg_db))
    assert problem.startswith("pg_dump is not installed on this machine")


def test_sqlite_and_directory_sources_are_looked_at(org: Organization, tmp_path: Path) -> None:
    def problems(kind: str, path: Path) -> list[str]:
        return check_source(Source(org=org, name="x", kind=kind, path=str(path)))

    db = sqlite_file(tmp_path / "app.sqlite3")
    (tmp_path / "notes.txt").write_text("not a database, but long enough to have a header")
    assert problems(SourceKind.SQLITE, db) == []
    assert problems(SourceKind.SQLITE, tmp_path / "gone.sqlite3") == [
        f"{tmp_path / 'gone.sqlite3'} does not exist; check the path"
    ]
    assert problems(SourceKind.SQLITE, tmp_path / "notes.txt") == [
        f"{tmp_path / 'notes.txt'} is not a SQLite database; check the path"
    ]
    assert problems(SourceKind.SQLITE, tmp_path) == [
        f"{tmp_path} is not a file; enter the path of the SQLite database file"
    ]
    assert problems(SourceKind.DIRECTORY, tmp_path) == []
    assert problems(SourceKind.DIRECTORY, tmp_path / "gone") == [
        f"{tmp_path / 'gone'} does not exist; check the path"
    ]
    assert problems(SourceKind.DIRECTORY, db) == [
        f"{db} is not a directory; enter a directory's path"
    ]
    assert db.read_bytes().startswith(b"SQLite format 3")  # looked at, left as it was
