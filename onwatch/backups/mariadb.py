"""MariaDB and MySQL sources and scratch targets: connections, row counts and checksums,
mariadb-dump and mariadb command lines. Passwords reach the tools through a 0600 option
file given with --defaults-file, never argv (MYSQL_PWD is deprecated and shows in
/proc/PID/environ to the same user anyway).

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

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.connections import Connection

from onwatch.backups.contents import Contents
from onwatch.backups.models import Source
from onwatch.config import env

SCHEMES = ("mariadb", "mysql")
# How long commits may stay blocked while mariadb-dump connects and opens its transaction.
START_TIMEOUT = 30.0
TOOLS = {"dump": ("mariadb-dump", "mysqldump"), "client": ("mariadb", "mysql")}


class MariaDBError(Exception):
    """The server or a tool refused; the message is for people."""


class DatabaseExists(MariaDBError):
    """CREATE DATABASE found one of that name."""


# --- servers and connections ----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, database: str | None = None) -> Connection[Any]:
        """To `database`, else the server's own; "" for none."""
        db = self.database if database is None else database
        with self.explained(db):
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=db or None,
                autocommit=True,
                connect_timeout=10,
                charset="utf8mb4",
            )

    @contextmanager
    def explained(self, database: str = "") -> Iterator[None]:
        """pymysql's errors, said in plain words."""
        try:
            yield
        except pymysql.MySQLError as e:
            raise MariaDBError(self.explain(e, database)) from e

    def explain(self, e: pymysql.MySQLError, database: str = "") -> str:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
        detail = str(e.args[1]) if len(e.args) > 1 else str(e)
        if code == 1045:
            return (
                f"the server at {self.where} refused user {self.user} with this password; "
                "check the user name and password"
            )
        if code in (2002, 2003, 2006, 2013):
            return (
                f"cannot reach the database server at {self.where} ({detail}); check the "
                "host and port and that the server is running"
            )
        if code == 1049:
            return f"there is no database {database} on {self.where}; check its name"
        return f"the server at {self.where} said: {detail}"


def source_server(source: Source) -> Server:
    return Server(
        host=source.host or "127.0.0.1",
        port=source.port or 3306,
        user=source.username or "root",
        password=source.password or "",
        database=source.database,
    )


def url_server(url: str) -> Server:
    """mariadb://user:password@host:3306/database (mysql:// too)."""
    u = urlsplit(url)
    return Server(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=unquote(u.path.lstrip("/")),
    )


def scratch_server(source: Source) -> Server:
    """Where drills restore: scratch_url's server, else the source's own (always in a new
    database, never the source database)."""
    if not source.scratch_url:
        return source_server(source)
    return url_server(source.scratch_url)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def query(conn: Connection[Any], sql: str, args: tuple[Any, ...] = ()) -> list[list[Any]]:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return [list(r) for r in cur.fetchall()]


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


# --- tools ------------------------------------------------------------------------------------


def tool(kind: str) -> str | None:
    """mariadb-dump (or mysqldump) and mariadb (or mysql): from ONWATCH_MARIADB_BIN_DIR,
    else PATH; None when neither is installed."""
    names = TOOLS[kind]
    configured = env("ONWATCH_MARIADB_BIN_DIR", "")
    if configured:
        found = [Path(configured) / n for n in names if (Path(configured) / n).exists()]
        return str(found[0]) if found else None
    for name in names:
        if path := shutil.which(name):
            return path
    return None


def needed_tool(kind: str) -> str:
    path = tool(kind)
    if path is None:
        raise MariaDBError(missing_tool(kind))
    return path


def missing_tool(kind: str) -> str:
    return (
        f"{TOOLS[kind][0]} is not installed on this machine; install the MariaDB client "
        "tools (Debian/Ubuntu: apt install mariadb-client) or set ONWATCH_MARIADB_BIN_DIR"
    )


@contextmanager
def option_file(server: Server) -> Iterator[str]:
    """A private (0600) option file holding the connection and the password, removed when
    the tool is done."""

    def value(v: str) -> str:
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    fd, path = tempfile.mkstemp(prefix="onwatch-my-", suffix=".cnf")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(
                "[client]\n"
                f"host={value(server.host)}\n"
                f"port={server.port}\n"
                f"user={value(server.user)}\n"
                f"password={value(server.password)}\n"
                "protocol=TCP\n"
                # Only the mariadb client knows this option; mariadb-dump would refuse it.
                "[mysql]\n"
                "connect-timeout=10\n"
            )
        yield path
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)


def tool_env() -> dict[str, str]:
    # MYSQL_HOST, MYSQL_PWD, MYSQL_TCP_PORT… from onwatch's own environment must not
    # redirect or authenticate the tools.
    return {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}


def dump_command(options: str, database: str) -> list[str]:
    return [
        needed_tool("dump"),
        f"--defaults-file={options}",  # must come first
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        # Progress on stderr, unbuffered: how onwatch sees the dump's transaction begin.
        "--verbose",
        "--",
        database,
    ]


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


def restore_command(options: str, database: str) -> list[str]:
    return [
        needed_tool("client"),
        f"--defaults-file={options}",
        "--batch",
        "--default-character-set=utf8mb4",
        f"--database={database}",
    ]


def last_error(lines: list[str]) -> str:
    """The tool's own error line (its --verbose progress lines start with "-- ")."""
    errors = [line for line in lines if line.strip() and not line.startswith("-- ")]
    return errors[-1].strip() if errors else "no error output"


def create_database(server: Server, name: str) -> None:
    with server.connect("") as conn:
        try:
            query(conn, f"CREATE DATABASE {quote(name)} CHARACTER SET utf8mb4")
        except pymysql.err.ProgrammingError as e:
            if e.args and e.args[0] == 1007:
                raise DatabaseExists(f"the database {name} exists already") from e
            raise MariaDBError(server.explain(e, name)) from e
        except pymysql.MySQLError as e:
            raise MariaDBError(server.explain(e, name)) from e


def create_scratch(server: Server) -> str:
    name = f"onwatch_drill_{secrets.token_hex(6)}"
    create_database(server, name)
    return name


def drop_database(server: Server, name: str) -> None:
    with server.connect("") as conn, server.explained():
        query(conn, f"DROP DATABASE IF EXISTS {quote(name)}")


# --- versions --------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Version:
    flavour: str  # "MariaDB" or "MySQL"
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.flavour} {self.major}.{self.minor}"


def parse_version(text: str) -> Version | None:
    """From SELECT VERSION() ("10.11.19-MariaDB-0+deb12u1", "8.0.36") or a tool's
    --version ("… Distrib 10.11.19-MariaDB, …", "mysqldump  Ver 8.0.36 for Linux …")."""
    if found := re.search(r"(\d+)\.(\d+)\.\d+-MariaDB", text):
        return Version("MariaDB", int(found.group(1)), int(found.group(2)))
    found = re.search(r"Distrib (\d+)\.(\d+)", text) or re.search(r"(\d+)\.(\d+)\.\d+", text)
    return Version("MySQL", int(found.group(1)), int(found.group(2))) if found else None


def tool_version(kind: str = "dump") -> Version | None:
    path = tool(kind)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None  # said as "not installed or not working" by the callers
    return parse_version(done.stdout)


def server_version(conn: Connection[Any]) -> Version | None:
    return parse_version(str(query(conn, "SELECT VERSION()")[0][0]))


def version_problem(client: Version | None, server: Version | None) -> str | None:
    """Say before the first run when the dump tool cannot faithfully dump this server."""
    if client is None:
        return missing_tool("dump")
    if server is None:
        return None
    if server.flavour == "MariaDB" and client.flavour == "MySQL":
        return (
            f"the server runs {server} but the dump tool is MySQL's mysqldump "
            f"{client.major}.{client.minor}, which fails on MariaDB servers; install the "
            "MariaDB client tools (apt install mariadb-client) or point "
            "ONWATCH_MARIADB_BIN_DIR at them"
        )
    if server.flavour == "MySQL" and client.flavour == "MariaDB" and server.major >= 8:
        return (
            f"the server runs {server} but the dump tool is MariaDB's mariadb-dump "
            f"({client.major}.{client.minor}), which does not dump MySQL 8 faithfully; "
            f"install MySQL {server.major}.{server.minor}'s client tools (mysqldump) and "
            "point ONWATCH_MARIADB_BIN_DIR at them"
        )
    if client.flavour == server.flavour and client < server:
        return (
            f"the dump tool is from {client} but the server runs {server}; install the "
            f"{server} client tools (or newer) or point ONWATCH_MARIADB_BIN_DIR at them"
        )
    return None


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
