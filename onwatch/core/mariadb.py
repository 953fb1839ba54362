"""MariaDB's and MySQL's client tools (mariadb-dump, mariadb; mysqldump, mysql) and
connections, for anything that reaches such a server: backups and drills today, deploys
and the security center next. Callers pass plain connection data (Server), never their
own models. Passwords reach the tools through a 0600 option file given with
--defaults-file, never argv (MYSQL_PWD is deprecated and shows in /proc/PID/environ to the
same user anyway)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from onwatch.config import env
from onwatch.core.lazy import lazy_module

if TYPE_CHECKING:
    import pymysql
    from pymysql.connections import Connection
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    pymysql = lazy_module("pymysql")

SCHEMES = ("mariadb", "mysql")
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


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def query(conn: Connection[Any], sql: str, args: tuple[Any, ...] = ()) -> list[list[Any]]:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return [list(r) for r in cur.fetchall()]


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


# --- command lines people run by hand (a recovery kit, with onwatch gone) -----------------

_PLAIN_NAME = re.compile(r"\w+")


def by_hand_connection(server: Server) -> str:
    """The client's connection options; -p makes it ask for the password."""
    return f"-h {shlex.quote(server.host)} -P {server.port} -u {shlex.quote(server.user)} -p"


def by_hand_create_database(server: Server, name: str) -> str:
    return f"mariadb {by_hand_connection(server)} -e 'CREATE DATABASE {_plain(name)}'"


def by_hand_restore_command(server: Server, database: str) -> str:
    """The mariadb client loading a dump from stdin into `database`."""
    return f"mariadb {by_hand_connection(server)} {shlex.quote(database)}"


def by_hand_drop_database(server: Server, name: str) -> str:
    return f"mariadb {by_hand_connection(server)} -e 'DROP DATABASE {_plain(name)}'"


def _plain(name: str) -> str:
    # Inside the quoted SQL only a plain name is safe without escaping twice.
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain database name")
    return name
