"""PostgreSQL's client tools (pg_dump, pg_restore) and connections, for anything that
reaches a PostgreSQL server: backups and drills today, deploys and the security center
next. Callers pass plain connection data (Server), never their own models. Passwords go
to the tools through PGPASSWORD, never argv."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onwatch.config import env
from onwatch.core.lazy import lazy_module

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")
    sql = lazy_module("psycopg.sql")


def bin_dirs(root: Path) -> list[Path]:
    """root/N/bin (9.6 before version 10), newest first: by number, since "9.6" sorts after
    "17" as text."""
    versions = {d: _version(d.parent.name) for d in root.glob("*/bin")}
    found = [d for d, v in versions.items() if v]
    return sorted(found, key=lambda d: versions[d], reverse=True)


def _version(name: str) -> tuple[int, ...]:
    parts = name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()


PG_BIN_DIRS = bin_dirs(Path("/usr/lib/postgresql"))


@dataclass(frozen=True)
class Server:
    """How to reach one PostgreSQL server, and the database to use there."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=database or self.database,
            autocommit=autocommit,
            connect_timeout=10,
        )

    def tool_env(self) -> dict[str, str]:
        # PGHOST, PGPASSWORD… from onwatch's own environment must not redirect the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def tool_args(self, database: str) -> list[str]:
        return [
            f"--host={self.host}",
            f"--port={self.port}",
            f"--username={self.user}",
            f"--dbname={database}",
            "--no-password",
        ]


def tool(name: str) -> str:
    """pg_dump, pg_restore, …: from ONWATCH_PG_BIN_DIR, else the newest
    /usr/lib/postgresql/N/bin, else PATH (newer pg_dump reads older servers, not the other
    way)."""
    configured = env("ONWATCH_PG_BIN_DIR", "")
    if configured:
        return str(Path(configured) / name)
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name) or name


def dump_command(server: Server, snapshot: str | None = None) -> list[str]:
    """pg_dump of the server's database in the custom format, to stdout; in `snapshot`
    (pg_export_snapshot's name) when given."""
    return [
        tool("pg_dump"),
        "--format=custom",
        *([f"--snapshot={snapshot}"] if snapshot else []),
        *server.tool_args(server.database),
    ]


def restore_command(server: Server, database: str) -> list[str]:
    """pg_restore of a custom-format dump from stdin into `database`."""
    # No owners or grants: the target server need not have the source's roles.
    return [
        tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        *server.tool_args(database),
    ]


def last_error(lines: list[str]) -> str:
    """The line of pg_restore's output that says what failed: its context and hints
    follow it, so the last line alone is often just "CONTEXT: COPY …"."""
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return (errors or lines or [""])[-1].strip()[:300]


def create_database(server: Server, name: str) -> None:
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: Server, name: str) -> None:
    with server.connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def tool_major(name: str) -> int:
    out = subprocess.run([tool(name), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(found.group(1)) if found else 0


def version_problem(client: int, server: int) -> str | None:
    """pg_dump refuses servers newer than itself; say so before the first run."""
    if client and server and client < server:
        return (
            f"pg_dump is version {client} but the server runs PostgreSQL {server}; install "
            f"the PostgreSQL {server} client tools or point ONWATCH_PG_BIN_DIR at them"
        )
    return None


# --- command lines people run by hand (a recovery kit, with onwatch gone) -----------------


def by_hand_connection(server: Server) -> str:
    """The client tools' connection options; the tools ask for the password."""
    return f"-h {shlex.quote(server.host)} -p {server.port} -U {shlex.quote(server.user)}"


def by_hand_create_database(server: Server, name: str) -> str:
    return f"createdb {by_hand_connection(server)} {shlex.quote(name)}"


def by_hand_restore_command(server: Server, database: str) -> str:
    """pg_restore as restore_command runs it, reading a custom-format dump from stdin."""
    return (
        "pg_restore --no-owner --no-privileges --exit-on-error "
        f"{by_hand_connection(server)} -d {shlex.quote(database)}"
    )


def by_hand_drop_database(server: Server, name: str) -> str:
    return f"dropdb {by_hand_connection(server)} {shlex.quote(name)}"
