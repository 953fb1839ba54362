"""PostgreSQL sources and scratch targets: connections, row counts, pg_dump and pg_restore
command lines. Passwords go to the tools through PGPASSWORD, never argv."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from onwatch.backups.conf import pg_tool
from onwatch.backups.models import Source


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    database: str

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


def source_server(source: Source) -> Server:
    return Server(
        host=source.host or "127.0.0.1",
        port=source.port or 5432,
        user=source.username or "postgres",
        password=source.password or "",
        database=source.database,
    )


def scratch_server(source: Source) -> Server:
    if not source.scratch_url:
        return source_server(source)
    u = urlsplit(source.scratch_url)
    return Server(
        host=u.hostname or "127.0.0.1",
        port=u.port or 5432,
        user=unquote(u.username or "postgres"),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/") or "postgres",
    )


_TABLES = """
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
    ORDER BY 1, 2
"""


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def export_snapshot(conn: psycopg.Connection) -> str:
    """Open a repeatable-read transaction and export its snapshot: pg_dump given it sees
    exactly the rows counted in it, so recorded counts match the dump."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def dump_command(server: Server, snapshot: str) -> list[str]:
    return [
        pg_tool("pg_dump"),
        "--format=custom",
        f"--snapshot={snapshot}",
        *server.tool_args(server.database),
    ]


def restore_command(server: Server, database: str) -> list[str]:
    # No owners or grants: the scratch server need not have the source's roles.
    return [
        pg_tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        *server.tool_args(database),
    ]


def create_scratch(server: Server) -> str:
    name = f"onwatch_drill_{secrets.token_hex(6)}"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server: Server, name: str) -> None:
    with server.connect() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def tool_major(tool: str) -> int:
    out = subprocess.run([pg_tool(tool), "--version"], capture_output=True, text=True).stdout
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
