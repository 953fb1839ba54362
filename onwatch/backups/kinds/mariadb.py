"""MariaDB and MySQL sources: mariadb-dump with counts and checksums taken in a snapshot
lined up with the dump's, restored with the mariadb client into a database onwatch
creates. Where a source's server is, the lining up and the measuring are
backups/mariadb.py's; the tools are core/mariadb.py's."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from onwatch.backups import drills, restic, restores, runs, targets
from onwatch.backups import mariadb as maria
from onwatch.backups.contents import checksum_checks
from onwatch.backups.kinds import SERVER_FIELDS, Log
from onwatch.backups.models import Plan, Repository, Source, SourceKind
from onwatch.backups.restore_requests import Target, login
from onwatch.core import mariadb as tools
from onwatch.core.mariadb import MariaDBError, query, quote

KIND: str = SourceKind.MARIADB
HELP: str = "a MariaDB or MySQL database, dumped with mariadb-dump"
FIELDS: tuple[str, ...] = SERVER_FIELDS
FIELD_HELP: dict[str, str] = {}
SCHEMES: tuple[str, ...] = ("mariadb", "mysql")
DEFAULT_PORT: int = 3306
SUFFIX: str = "sql"


# --- check -----------------------------------------------------------------------------------

_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)


def has_reload(grants: list[str]) -> bool:
    """From SHOW GRANTS: RELOAD (or ALL PRIVILEGES) on *.*."""
    for line in grants:
        found = _GLOBAL_GRANT.match(line)
        if found and re.search(r"\b(RELOAD|ALL PRIVILEGES)\b", found.group(1), re.IGNORECASE):
            return True
    return False


def check(source: Source) -> list[str]:
    client = tools.tool_version("dump")
    if client is None:
        return [tools.missing_tool("dump")]
    if not source.database:
        return ["name the database to back up"]
    server = maria.source_server(source)
    try:
        with server.connect() as conn, server.explained(server.database):
            version = tools.server_version(conn)
            grants = [str(r[0]) for r in query(conn, "SHOW GRANTS")]
    except MariaDBError as e:
        return [str(e)]
    problems = [p for p in [tools.version_problem(client, version)] if p]
    if not has_reload(grants):
        problems.append(
            f"user {server.user} lacks the RELOAD privilege, which onwatch needs to hold "
            "commits for the moment the dump starts; run GRANT RELOAD ON *.* TO that user"
        )
    if source.scratch_url:
        scratch = maria.scratch_server(source)
        try:
            scratch.connect("").close()
        except MariaDBError as e:
            problems.append(f"scratch server for drills: {e}")
    return problems


# --- backup ----------------------------------------------------------------------------------


def backup(plan: Plan, copies: list[Repository], tags: list[str], log: Log) -> runs.Outcomes:
    """mariadb-dump streamed into every copy; counts and checksums come from a snapshot
    lined up with the dump's (see backups/mariadb.py)."""
    out = runs.Outcomes()
    with maria.Dump(maria.source_server(plan.source)) as dump:
        log("mariadb-dump opened its transaction; counting and checksumming beside it")
        assert dump.proc.stdout is not None
        running = runs.stream(dump.proc.stdout, copies, runs.snapshot_name(plan), tags)
        code = dump.proc.wait()
        out.results = runs.finish_all(running)
        try:
            found = dump.recorded()
            out.contents = found.as_json()
            log(f"counted and checksummed {len(found.rows)} tables")
        except MariaDBError as e:
            out.dump_error = str(e)  # a copy that cannot be verified is not good
        if code != 0:
            out.dump_error = f"mariadb-dump {runs.describe_exit(code)} ({dump.error_line()})"
    return out


def snapshot_path(plan: Plan) -> str:
    return f"/{runs.snapshot_name(plan)}"


# --- drill -----------------------------------------------------------------------------------


def drill(
    plan: Plan, repo: restic.Repo, snap: restic.Snapshot, contents: dict[str, Any], log: Log
) -> drills.Phases:
    server = maria.scratch_server(plan.source)
    name = maria.create_scratch(server)
    log(f"created scratch database {name} on {server.where}")
    try:
        timings = targets.to_mariadb(repo, snap, server, name, events_off=True)
        started = time.monotonic()
        with server.connect(name) as conn:
            # Belt and braces: an event written in a form the rewrite did not know.
            for event in maria.enabled_events(conn, name):
                query(conn, f"ALTER EVENT {quote(event)} DISABLE")
                log(f"switched off event {event} in the scratch copy")
            with server.explained(name):
                found = maria.table_contents(conn, name)
            checks = drills.count_checks(contents.get("tables", {}), found.rows)
            checks += checksum_checks(contents.get("checksums", {}), found.checksums)

            def ask(q: str) -> list[list[Any]]:
                with server.explained(name):
                    query(conn, "START TRANSACTION READ ONLY")
                    try:
                        return query(conn, q)
                    finally:
                        query(conn, "ROLLBACK")

            checks += drills.smoke_checks(plan.source.smoke_queries, ask)
        return timings, time.monotonic() - started, checks
    finally:
        try:
            tools.drop_database(server, name)
            log(f"dropped scratch database {name}")
        except MariaDBError as e:
            # The drill's own verdict stands; the leftover is for people to remove.
            log(f"could not drop scratch database {name} ({e}); drop it by hand")


# --- restore ---------------------------------------------------------------------------------


def restore(repo: restic.Repo, snap: restic.Snapshot, target: str) -> None:
    """Targets are a URL naming a database onwatch creates."""
    server = tools.url_server(target)
    if urlsplit(target).scheme not in SCHEMES or not server.database:
        raise restores.RestoreRefused(
            f"{restores.shown_target(target)} is not a MariaDB URL with a database name; use "
            "mariadb://user:password@host:3306/new_database"
        )
    try:
        tools.create_database(server, server.database)
    except tools.DatabaseExists:
        raise restores.RestoreRefused(
            f"the database {server.database} exists already; restore into a new name"
        ) from None
    except MariaDBError as e:
        raise restores.RestoreRefused(str(e)) from None
    name = server.database
    what = f"the half-restored database {name} on {server.where}"
    drop = f"drop it with the SQL DROP DATABASE `{name}`;"
    with restores.removed_on_failure(lambda: tools.drop_database(server, name), what, drop):
        targets.to_mariadb(repo, snap, server, name)


def target_taken(source: Source, target: Target) -> bool:
    """Raises MariaDBError."""
    where = login(source, target.server)
    server = tools.Server(where.host, where.port, where.user or "root", where.password, "")
    with server.connect("") as conn, server.explained():
        found = query(
            conn,
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
            (target.database,),
        )
    return bool(found)


# --- recovery kit ----------------------------------------------------------------------------


def kit_steps(plan: Plan, command: str, snapshot: str) -> list[str]:
    server = maria.source_server(plan.source)
    return [
        "The newest verified backup into a new database called `restored` (never over "
        "the live one):",
        "",
        "```sh",
        tools.by_hand_create_database(server, "restored"),
        f"{command} dump {snapshot} /{runs.snapshot_name(plan)} | "
        f"{tools.by_hand_restore_command(server, 'restored')}",
        "```",
        "",
        "If it stops with an error, the database `restored` holds only part of the "
        f"backup: remove it with `{tools.by_hand_drop_database(server, 'restored')}` "
        "before you try another one.",
    ]


if TYPE_CHECKING:
    from onwatch.backups import kinds
    from onwatch.backups.kinds import mariadb

    _: kinds.Kind = mariadb
