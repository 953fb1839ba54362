"""MariaDB and MySQL sources and scratch targets: where a source's server is, row counts
and checksums, scratch databases, and the dump lined up with the recorded counts. The
tools themselves (mariadb-dump, mariadb), connections and versions are core/mariadb.py's.

Lining the recorded counts up with the dump. MariaDB cannot hand one transaction's
snapshot to another connection (PostgreSQL's pg_export_snapshot), so onwatch makes two
snapshots that see the same data:

1. a lock connection stops commits: `BACKUP STAGE START` + `BACKUP STAGE BLOCK_COMMIT` on
   MariaDB 10.4+ (writes in flight wait at their commit; readers are not held up, and no
   table flush is needed), `FLUSH TABLES WITH READ LOCK` on MySQL and older MariaDB;
2. a second connection opens `START TRANSACTION WITH CONSISTENT SNAPSHOT`;
3. `mariadb-dump --single-transaction --verbose` starts; it reports on stderr (unbuffered)
   before and after it opens its own consistent snapshot, and once that is open,
4. the lock is released. Both snapshots were taken while nothing could commit, so they see
   the same rows; the counts (`count(*)`) and `CHECKSUM TABLE` results are then taken in
   our snapshot while the dump streams from its own. Commits wait only for the dump to
   connect and open its transaction, usually well under a second.

Both locks need the RELOAD privilege; `checks.check_source` says so before the first run.
This holds for transactional tables (InnoDB, the default). MyISAM and Aria tables are
outside any transaction: mariadb-dump --single-transaction is itself not consistent for
them, and a drill may then report a difference that was really a write during the dump.
CHECKSUM TABLE depends on the stored row format, so a table last rebuilt under a very old
server version (pre-5.6 temporal columns) can checksum differently after a restore; the
drill names the table, and `ALTER TABLE … FORCE` on the source settles it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from onwatch.backups.contents import Contents
from onwatch.backups.models import Source
from onwatch.core.lazy import lazy_module
from onwatch.core.mariadb import (
    MariaDBError,
    Server,
    Version,
    create_database,
    dump_command,
    last_error,
    option_file,
    query,
    quote,
    server_version,
    tool_env,
    tool_version,
    url_server,
    version_problem,
)

if TYPE_CHECKING:
    import pymysql
    from pymysql.connections import Connection
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    pymysql = lazy_module("pymysql")

# How long commits may stay blocked while mariadb-dump connects and opens its transaction.
START_TIMEOUT = 30.0


# --- where a source is -----------------------------------------------------------------------


def source_server(source: Source) -> Server:
    return Server(
        host=source.host or "127.0.0.1",
        port=source.port or 3306,
        user=source.username or "root",
        password=source.password or "",
        database=source.database,
    )


def scratch_server(source: Source) -> Server:
    """Where drills restore: scratch_url's server, else the source's own (always in a new
    database, never the source database)."""
    if not source.scratch_url:
        return source_server(source)
    return url_server(source.scratch_url)


# --- what is in a database ------------------------------------------------------------------

_TABLES = """
    SELECT TABLE_NAME FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')
    ORDER BY TABLE_NAME
"""


def table_names(conn: Connection[Any], database: str) -> list[str]:
    return [str(r[0]) for r in query(conn, _TABLES, (database,))]


def table_counts(conn: Connection[Any], database: str) -> dict[str, int]:
    counts = {}
    for t in table_names(conn, database):
        # Identifiers cannot be parameters; quote() escapes them.
        rows = query(conn, f"SELECT count(*) FROM {quote(database)}.{quote(t)}")  # noqa: S608
        counts[t] = int(rows[0][0])
    return counts


def table_checksums(conn: Connection[Any], database: str) -> dict[str, str]:
    """CHECKSUM TABLE of each table (a decimal string, as contents.py keeps them): equal
    contents give equal numbers."""
    sums = {}
    for t in table_names(conn, database):
        [[_, value]] = query(conn, f"CHECKSUM TABLE {quote(database)}.{quote(t)}")
        sums[t] = str(value)
    return sums


def table_contents(conn: Connection[Any], database: str) -> Contents:
    return Contents(table_counts(conn, database), table_checksums(conn, database))


# --- dumps and drills ---------------------------------------------------------------------------


# How mariadb-dump (and mysqldump) writes a scheduled event, up to its status:
#   /*!50106 CREATE*/ /*!50117 DEFINER=`u`@`h`*/ /*!50106 EVENT `name` ON SCHEDULE EVERY 1
#   SECOND STARTS '…' ON COMPLETION NOT PRESERVE ENABLE [COMMENT '…'] DO …
_ENABLED_EVENT = re.compile(
    rb"^(/\*!50106 CREATE\*/ (?:/\*!50117 DEFINER=.*?\*/ )?/\*!50106 EVENT `(?:[^`]|``)*`"
    rb" ON SCHEDULE (?:[^'\n]|'(?:[^'\\\n]|\\.)*')*? ON COMPLETION (?:NOT )?PRESERVE) ENABLE ",
    re.MULTILINE,
)


def switch_off_events(lines: bytes) -> bytes:
    """The dump's events created DISABLED: a drill's scratch copy sits on a real server,
    and an enabled event there would run the source's jobs (and any statement naming the
    source's own tables) while the drill runs."""
    if b"EVENT" not in lines:
        return lines
    return _ENABLED_EVENT.sub(rb"\1 DISABLE ", lines)


def enabled_events(conn: Connection[Any], database: str) -> list[str]:
    rows = query(
        conn,
        "SELECT EVENT_NAME FROM information_schema.EVENTS "
        "WHERE EVENT_SCHEMA = %s AND STATUS = 'ENABLED'",
        (database,),
    )
    return [str(r[0]) for r in rows]


def create_scratch(server: Server) -> str:
    name = f"onwatch_drill_{secrets.token_hex(6)}"
    create_database(server, name)
    return name


# --- the dump, lined up with our counts ---------------------------------------------------------


def block_commits(conn: Connection[Any], version: Version | None) -> str:
    """Stop commits server-wide; returns the statement that lets them go again."""
    query(conn, "SET SESSION lock_wait_timeout = 10")
    try:
        if version and version.flavour == "MariaDB" and (version.major, version.minor) >= (10, 4):
            query(conn, "BACKUP STAGE START")
            query(conn, "BACKUP STAGE BLOCK_COMMIT")
            return "BACKUP STAGE END"
        query(conn, "FLUSH TABLES WITH READ LOCK")
        return "UNLOCK TABLES"
    except pymysql.err.OperationalError as e:
        if e.args and e.args[0] in (1044, 1045, 1227):
            raise MariaDBError(
                "the user needs the RELOAD privilege so onwatch can hold commits for the "
                "moment the dump starts (GRANT RELOAD ON *.* TO the backup user)"
            ) from e
        raise


class Dump:
    """mariadb-dump running in its own consistent snapshot, with the counts and checksums
    taken in a snapshot of ours that sees the same rows (see the module docstring). Use as
    a context manager; read `proc.stdout`, then `proc.wait()`, then `recorded()`."""

    proc: subprocess.Popen[bytes]

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stderr: list[str] = []
        self._started = threading.Event()
        self._counted = Contents()
        self._count_error = ""
        self._threads: list[threading.Thread] = []
        self._cleanup = ExitStack()

    def __enter__(self) -> Dump:
        try:
            options = self._cleanup.enter_context(option_file(self.server))
            snap = self._start(options)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._spawn(self._count, snap)
        return self

    def _start(self, options: str) -> Connection[Any]:
        lock = self.server.connect()
        snap = self.server.connect()
        try:
            with self.server.explained(self.server.database):
                version = server_version(lock)
                problem = version_problem(tool_version("dump"), version)
                if problem:
                    raise MariaDBError(problem)
                release = block_commits(lock, version)
                query(snap, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                query(snap, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                self.proc = subprocess.Popen(
                    dump_command(options, self.server.database),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=tool_env(),
                )
                self._spawn(self._read_stderr)
                started = self._started.wait(START_TIMEOUT)
                query(lock, release)
        except BaseException:
            snap.close()
            raise
        finally:
            lock.close()
        if not started:
            snap.close()
            raise MariaDBError(
                f"mariadb-dump did not open its transaction within {START_TIMEOUT:.0f} s; "
                "check the server's load and locks"
            )
        return snap

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stderr(self) -> None:
        """Any line after "-- Starting transaction..." means the dump's snapshot is open
        (or the dump failed); so does the end of its output."""
        assert self.proc.stderr is not None
        opening = False
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr.append(line)
            if opening:
                self._started.set()
            opening = opening or line.startswith("-- Starting transaction")
        self._started.set()

    def _count(self, snap: Connection[Any]) -> None:
        try:
            with self.server.explained(self.server.database):
                self._counted = table_contents(snap, self.server.database)
        except MariaDBError as e:
            self._count_error = str(e)
        except Exception as e:
            self._count_error = f"counting the tables failed: {e}"
        finally:
            snap.close()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def recorded(self) -> Contents:
        """The counts and checksums; raises when they could not be taken."""
        self._join()
        if self._count_error:
            raise MariaDBError(f"could not count the rows at backup: {self._count_error}")
        return self._counted

    def error_line(self) -> str:
        self._join()
        return last_error(self.stderr)

    def __exit__(self, *exc: object) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._join()
        self._cleanup.close()
