"""PostgreSQL sources: pg_dump in an exported snapshot, counted and checksummed in that same
snapshot, restored with pg_restore into a database onwatch creates. Where a source's server
is and how its tables are measured is pg.py's; the tools are core/postgres.py's."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from onwatch.backups import drills, pg, restic, restores, runs, targets
from onwatch.backups.contents import Contents, checksum_checks
from onwatch.backups.kinds import SERVER_FIELDS, Log
from onwatch.backups.models import Plan, Repository, Source, SourceKind
from onwatch.backups.restore_requests import Target, login
from onwatch.core import postgres
from onwatch.core.lazy import lazy_module

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")
    sql = lazy_module("psycopg.sql")

KIND: str = SourceKind.POSTGRESQL
HELP: str = "a PostgreSQL database, dumped with pg_dump"
FIELDS: tuple[str, ...] = SERVER_FIELDS
FIELD_HELP: dict[str, str] = {}
SCHEMES: tuple[str, ...] = ("postgresql", "postgres")
DEFAULT_PORT: int = 5432
SUFFIX: str = "pgdump"


# --- check -----------------------------------------------------------------------------------


def check(source: Source) -> list[str]:
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
        return [connection_problem(server, e)]
    problems = [p for p in [postgres.version_problem(postgres.tool_major("pg_dump"), major)] if p]
    if source.scratch_url:
        scratch = pg.scratch_server(source)
        try:
            scratch.connect().close()
        except psycopg.OperationalError as e:
            problems.append(f"scratch server for drills: {connection_problem(scratch, e)}")
    return problems


def connection_problem(server: postgres.Server, e: psycopg.OperationalError) -> str:
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


# --- backup ----------------------------------------------------------------------------------


def backup(plan: Plan, copies: list[Repository], tags: list[str], log: Log) -> runs.Outcomes:
    server = pg.source_server(plan.source)
    out = runs.Outcomes()
    with server.connect() as conn:
        major = conn.info.server_version // 10000
        problem = postgres.version_problem(postgres.tool_major("pg_dump"), major)
        if problem:
            raise runs.DumpFailed(problem)
        snapshot = pg.export_snapshot(conn)
        # Counted and checksummed beside the dump, in its snapshot: same rows, less wait.
        measuring = pg.start_contents(server, snapshot)
        with tempfile.TemporaryFile("w+") as err:
            dump = subprocess.Popen(
                postgres.dump_command(server, snapshot),
                stdout=subprocess.PIPE,
                stderr=err,
                env=server.tool_env(),
            )
            assert dump.stdout is not None
            running = runs.stream(dump.stdout, copies, runs.snapshot_name(plan), tags)
            code = dump.wait()
            out.results = runs.finish_all(running)
            err.seek(0)
            message = err.read().strip().splitlines()
        out.contents, unmeasured = measured(measuring, snapshot, log)
        conn.execute("COMMIT")
    if code != 0:
        why = message[-1] if message else "no error output"
        out.dump_error = f"pg_dump {runs.describe_exit(code)} ({why})"
    out.dump_error = out.dump_error or unmeasured
    return out


def measured(measuring: Future[Contents], snapshot: str, log: Log) -> tuple[dict[str, Any], str]:
    """The counts and checksums, or why there are none: a copy without them cannot be
    verified, so it does not count as good."""
    try:
        found = measuring.result()
    except psycopg.Error as e:
        return {}, f"counting the tables in snapshot {snapshot} failed ({str(e).strip()})"
    log(f"counted and checksummed {len(found.rows)} tables in snapshot {snapshot}")
    return found.as_json(), ""


def snapshot_path(plan: Plan) -> str:
    return f"/{runs.snapshot_name(plan)}"


# --- drill -----------------------------------------------------------------------------------


def drill(
    plan: Plan, repo: restic.Repo, snap: restic.Snapshot, contents: dict[str, Any], log: Log
) -> drills.Phases:
    server = pg.scratch_server(plan.source)
    name = pg.create_scratch(server)
    log(f"created scratch database {name} on {server.host}:{server.port}")
    try:
        timings = targets.to_postgresql(repo, snap, server, name)
        started = time.monotonic()
        with server.connect(name) as conn:
            found = pg.table_contents(conn, contents.get("checksums"))
            checks = drills.count_checks(contents.get("tables", {}), found.rows)
            checks += checksum_checks(contents.get("checksums", {}), found.checksums)

            def ask(q: str) -> list[list[Any]]:
                rows: list[list[Any]] = []
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    rows = [list(r) for r in conn.execute(q).fetchall()]
                    raise psycopg.Rollback()
                return rows

            checks += drills.smoke_checks(plan.source.smoke_queries, ask)
        return timings, time.monotonic() - started, checks
    finally:
        log(pg.discard_scratch(server, name))


# --- restore ---------------------------------------------------------------------------------


def restore(repo: restic.Repo, snap: restic.Snapshot, target: str) -> None:
    """Targets are a URL whose database must not exist yet: onwatch creates it, so a
    restore can never mix into (or overwrite) a live database."""
    parts = urlsplit(target)
    name = parts.path.lstrip("/")
    if parts.scheme not in SCHEMES or not name:
        raise restores.RestoreRefused(
            f"{restores.shown_target(target)} is not a PostgreSQL URL with a database name; "
            "use postgresql://user@host:5432/new_database"
        )
    server = postgres.Server(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or DEFAULT_PORT,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        database="postgres",
    )
    try:
        with server.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        raise restores.RestoreRefused(
            f"the database {name} exists already; restore into a new name"
        ) from None
    except psycopg.Error as e:
        # The server is down or unreachable, or the user may not create databases: nothing
        # was made, so nothing is left to remove.
        said = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise restores.RestoreRefused(
            f"cannot create the database {name} on the PostgreSQL server at {server.where} "
            f"({said}); check that it runs and that the URL is right, then try again — "
            "nothing was restored or changed"
        ) from None
    what = f"the half-restored database {name} on {server.host}:{server.port}"
    drop = f'drop it with the SQL DROP DATABASE "{name}";'
    with restores.removed_on_failure(lambda: postgres.drop_database(server, name), what, drop):
        targets.to_postgresql(repo, snap, server, name)


def target_taken(source: Source, target: Target) -> bool:
    """Raises psycopg.Error."""
    where = login(source, target.server)
    server = postgres.Server(where.host, where.port, where.user or "postgres", where.password, "")
    with server.connect(where.database or "postgres") as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [target.database]
        ).fetchone()
    return row is not None


# --- recovery kit ----------------------------------------------------------------------------


def kit_steps(plan: Plan, command: str, snapshot: str) -> list[str]:
    server = pg.source_server(plan.source)
    return [
        "The newest verified backup into a new database called `restored` (never over "
        "the live one; `pg_restore` and `createdb` come with the PostgreSQL client tools):",
        "",
        "```sh",
        postgres.by_hand_create_database(server, "restored"),
        f"{command} dump {snapshot} /{runs.snapshot_name(plan)} | "
        f"{postgres.by_hand_restore_command(server, 'restored')}",
        "```",
        "",
        "If it stops with an error, the database `restored` holds only part of the "
        f"backup: remove it with `{postgres.by_hand_drop_database(server, 'restored')}` "
        "before you try another one.",
    ]


if TYPE_CHECKING:
    from onwatch.backups import kinds
    from onwatch.backups.kinds import postgresql

    _: kinds.Kind = postgresql
