"""Is a source ready to be backed up? Asked when a source is saved, so a wrong password,
a missing database or a dump tool older than the server is explained before the first run
rather than by a failed one. Each problem is one line for people; none means ready.

Fast and side-effect free: it connects (10 s timeouts), reads versions and privileges,
and looks at files; it creates, locks and writes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg

from onwatch.backups import mariadb, pg
from onwatch.backups.models import Source, SourceKind
from onwatch.core import postgres
from onwatch.core.mariadb import (
    MariaDBError,
    missing_tool,
    query,
    server_version,
    tool_version,
    version_problem,
)

SQLITE_HEADER = b"SQLite format 3\x00"


def check_source(source: Source) -> list[str]:
    checker = CHECKS.get(source.kind)
    if checker is None:
        return [f"onwatch cannot back up sources of kind {source.kind!r}"]
    return checker(source)


# --- PostgreSQL ------------------------------------------------------------------------------


def check_postgresql(source: Source) -> list[str]:
    if not shutil.which(postgres.tool("pg_dump")):
        return [
            "pg_dump is not installed on this machine; install the PostgreSQL client tools "
            "(Debian/Ubuntu: apt install postgresql-client) or set ONWATCH_PG_BIN_DIR"
        ]
    if not source.database:
        return ["name the database to back up"]
    server = pg.source_server(source)
    try:
        with server.connect() as conn:
            major = conn.info.server_version // 10000
    except psycopg.OperationalError as e:
        return [pg_connection_problem(server, e)]
    problems = [p for p in [postgres.version_problem(postgres.tool_major("pg_dump"), major)] if p]
    if source.scratch_url:
        scratch = pg.scratch_server(source)
        try:
            scratch.connect().close()
        except psycopg.OperationalError as e:
            problems.append(f"scratch server for drills: {pg_connection_problem(scratch, e)}")
    return problems


def pg_connection_problem(server: postgres.Server, e: psycopg.OperationalError) -> str:
    text, where = str(e), f"{server.host}:{server.port}"
    if "password authentication failed" in text:
        return f"the server at {where} refused user {server.user} with this password; check them"
    if "no password supplied" in text:
        return f"the server at {where} wants a password for user {server.user}; enter it"
    if f'role "{server.user}" does not exist' in text:
        return f"there is no user {server.user} on {where}; check the user name"
    if f'database "{server.database}" does not exist' in text:
        return f"there is no database {server.database} on {where}; check its name"
    if "no pg_hba.conf entry" in text:
        return (
            f"the server at {where} does not let user {server.user} in from this machine; "
            "allow it in the server's pg_hba.conf"
        )
    # "connection to server at "h", port p failed: Connection refused\n\tIs the server…"
    reason = text.strip().splitlines()[0].rsplit("failed: ", 1)[-1] if text.strip() else ""
    return (
        f"cannot reach the PostgreSQL server at {where} ({reason or type(e).__name__}); "
        "check the host and port and that the server is running"
    )


# --- MariaDB / MySQL ---------------------------------------------------------------------------

_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)


def has_reload(grants: list[str]) -> bool:
    """From SHOW GRANTS: RELOAD (or ALL PRIVILEGES) on *.*."""
    for line in grants:
        found = _GLOBAL_GRANT.match(line)
        if found and re.search(r"\b(RELOAD|ALL PRIVILEGES)\b", found.group(1), re.IGNORECASE):
            return True
    return False


def check_mariadb(source: Source) -> list[str]:
    client = tool_version("dump")
    if client is None:
        return [missing_tool("dump")]
    if not source.database:
        return ["name the database to back up"]
    server = mariadb.source_server(source)
    try:
        with server.connect() as conn, server.explained(server.database):
            version = server_version(conn)
            grants = [str(r[0]) for r in query(conn, "SHOW GRANTS")]
    except MariaDBError as e:
        return [str(e)]
    problems = [p for p in [version_problem(client, version)] if p]
    if not has_reload(grants):
        problems.append(
            f"user {server.user} lacks the RELOAD privilege, which onwatch needs to hold "
            "commits for the moment the dump starts; run GRANT RELOAD ON *.* TO that user"
        )
    if source.scratch_url:
        scratch = mariadb.scratch_server(source)
        try:
            scratch.connect("").close()
        except MariaDBError as e:
            problems.append(f"scratch server for drills: {e}")
    return problems


# --- files -------------------------------------------------------------------------------------


def check_sqlite(source: Source) -> list[str]:
    path = Path(source.path)
    if not source.path:
        return ["enter the path of the SQLite file"]
    if not path.exists():
        return [f"{path} does not exist; check the path"]
    if not path.is_file():
        return [f"{path} is not a file; enter the path of the SQLite database file"]
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        return [f"onwatch cannot read {path} ({e.strerror}); check its permissions"]
    if header != SQLITE_HEADER:
        return [f"{path} is not a SQLite database; check the path"]
    return []


def check_directory(source: Source) -> list[str]:
    path = Path(source.path)
    if not source.path:
        return ["enter the path of the directory"]
    if not path.exists():
        return [f"{path} does not exist; check the path"]
    if not path.is_dir():
        return [f"{path} is not a directory; enter a directory's path"]
    if not os.access(path, os.R_OK | os.X_OK):
        return [f"onwatch cannot read {path}; check its permissions"]
    return []


CHECKS: dict[str, Callable[[Source], list[str]]] = {
    SourceKind.POSTGRESQL: check_postgresql,
    SourceKind.MARIADB: check_mariadb,
    SourceKind.SQLITE: check_sqlite,
    SourceKind.DIRECTORY: check_directory,
}
