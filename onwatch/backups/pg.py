"""PostgreSQL sources and scratch targets: where a source's server is, row counts and
checksums, scratch databases for drills. The tools themselves (pg_dump, pg_restore) and
connections are core/postgres.py's."""

from __future__ import annotations

import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from onwatch.backups.contents import Contents
from onwatch.backups.models import Source
from onwatch.core import postgres
from onwatch.core.lazy import lazy_module
from onwatch.core.postgres import Server

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")
    sql = lazy_module("psycopg.sql")


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


# Per row, a 64-bit hash, summed: order-independent, so neither end sorts, and the sum
# (numeric: sum of bigint never overflows) changes when any row does, but for a chance of
# about 2^-60 per differing row. Two ways to hash a row, recorded with the sum so a drill
# uses the same one:
# - "hash": hash_record_extended (PostgreSQL 14+), each column type's own hash function.
#   No text rendering, so about six times cheaper than md5 (0.7 s against 4.0 s for 1.8
#   million order rows here) and blind to session settings; it does not tell 1.5 from
#   1.50 in a numeric column, which a restore never changes anyway.
# - "md5": the first 60 bits of md5 of the row's text, for older servers and for tables
#   with a column type that has no hash function (json, xml, money, geometric types).
_CHECKSUMS = {
    "hash": "SELECT count(*), coalesce(sum(hash_record_extended(r.*, 0)), 0) FROM {}.{} AS r",
    "md5": "SELECT count(*), "
    "coalesce(sum(('x' || left(md5((r.*)::text), 15))::bit(60)::bigint), 0) FROM {}.{} AS r",
}

# md5 hashes rows in their text form, so both ends print values the same way whatever the
# server's or the role's defaults (dates, time zone, floats, bytea, money).
# SET LOCAL: the session's own settings (which smoke queries see) stay as they were.
_STABLE_OUTPUT = (
    "SET LOCAL datestyle = 'ISO, YMD'",
    "SET LOCAL intervalstyle = 'postgres'",
    "SET LOCAL timezone = 'UTC'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL lc_monetary = 'C'",
)


def table_contents(conn: psycopg.Connection, like: dict[str, str] | None = None) -> Contents:
    """Row count and content checksum of every table, one scan each; each table hashed
    the way its checksum in `like` (what the backup recorded) was, if it is there."""
    with conn.transaction():
        return _measure(conn, like or {})


def _measure(conn: psycopg.Connection, like: dict[str, str]) -> Contents:
    for statement in _STABLE_OUTPUT:
        conn.execute(statement)
    hashable = conn.info.server_version >= 140000
    found = Contents()
    for schema, table in conn.execute(_TABLES).fetchall():
        name = f"{schema}.{table}"
        recorded = like.get(name, "").partition(":")[0]
        ways = [recorded] if recorded in _CHECKSUMS else ["hash", "md5"] if hashable else ["md5"]
        found.rows[name], found.checksums[name] = _checksum(conn, schema, table, ways)
    return found


def _checksum(
    conn: psycopg.Connection, schema: str, table: str, ways: list[str]
) -> tuple[int, str]:
    """Count and checksum by the first way the table's column types allow."""
    for way in ways:
        query = sql.SQL(_CHECKSUMS[way]).format(sql.Identifier(schema), sql.Identifier(table))
        last = way == ways[-1]
        if not last:
            conn.execute("SAVEPOINT onwatch_checksum")
        try:
            row = conn.execute(query).fetchone()
        except psycopg.errors.UndefinedFunction:
            if last:
                raise
            conn.execute("ROLLBACK TO SAVEPOINT onwatch_checksum")
            continue
        if not last:
            conn.execute("RELEASE SAVEPOINT onwatch_checksum")
        assert row is not None
        return int(row[0]), f"{way}:{row[1]}"
    raise AssertionError("no way to checksum")  # unreachable: the last way raises


def contents_in_snapshot(server: Server, snapshot: str) -> Contents:
    """Counts and checksums on a connection of its own that imports `snapshot`: it sees
    exactly what pg_dump sees, and can run while the dump streams."""
    with server.connect() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        # Beside pg_dump, restic and the server's COPY, parallel workers only add to the
        # contention for the cores; alone in a drill, they help.
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        found = _measure(conn, {})
        conn.execute("COMMIT")
    return found


def start_contents(server: Server, snapshot: str) -> Future[Contents]:
    """contents_in_snapshot on a thread, alongside the dump. The exporting transaction
    must stay open until the result is in: the import needs it alive."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onwatch-checksums")
    try:
        return pool.submit(contents_in_snapshot, server, snapshot)
    finally:
        pool.shutdown(wait=False)  # the thread ends when its one task does


def export_snapshot(conn: psycopg.Connection) -> str:
    """Open a repeatable-read transaction and export its snapshot: pg_dump given it sees
    exactly the rows counted in it, so recorded counts match the dump."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def create_scratch(server: Server) -> str:
    name = f"onwatch_drill_{secrets.token_hex(6)}"
    postgres.create_database(server, name)
    return name


def discard_scratch(server: Server, name: str) -> str:
    """Drop a scratch database; what happened, for the drill's log. Its schemas go first,
    each in its own transaction: that hands their disk space back at once, where DROP
    DATABASE starts with a checkpoint that a full disk turns into a server crash (PANIC
    writing pg_logical/replorigin_checkpoint.tmp)."""
    try:
        with server.connect(name) as conn:
            for (schema,) in conn.execute(_SCHEMAS).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error:
        pass  # best effort: DROP DATABASE below removes them as well
    try:
        postgres.drop_database(server, name)
    except psycopg.Error as e:
        return (
            f"could not drop the scratch database {name} on {server.host}:{server.port} "
            f"({str(e).strip()}); drop it by hand"
        )
    return f"dropped scratch database {name}"


_SCHEMAS = """
    SELECT nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg_toast%%' AND nspname NOT LIKE 'pg_temp%%'
"""
