"""A real MariaDB server for the tests: mariadbd from the Debian package in a temp data
directory, on a free loopback port with a socket of its own, one per test session (one per
pytest-xdist worker), stopped at teardown. It runs as the `mysql` system user when the
tests run as root, as the server refuses root."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from onwatch.backups import services
from onwatch.backups.models import Source, SourceKind
from onwatch.core import mariadb as mariadb_tools
from onwatch.core.models import Organization
from tests.support.procs import free_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
USER = "onwatch"
# The backup user needs RELOAD (for the brief commit block that lines the counts up with
# the dump) besides the usual dump privileges; the tests simply grant it everything.
PASSWORD = "maria-" + secrets.token_hex(8)


@dataclass(frozen=True)
class MariaDB:
    host: str
    port: int
    user: str
    password: str
    version: str

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            autocommit=True,
            connect_timeout=10,
        )

    def url(self, database: str = "", scheme: str = "mariadb") -> str:
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


def _as_mysql() -> list[str]:
    """As root, mariadbd and mariadb-install-db switch to the mysql user themselves."""
    return ["--user=mysql"] if os.geteuid() == 0 else []


def _wait_for(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mariadbd exited: {log.read_text()[-2000:]}")
        try:
            pymysql.connect(
                unix_socket=str(log.parent / "mysqld.sock"), user="root", connect_timeout=2
            ).close()
            return
        except pymysql.err.OperationalError:
            time.sleep(0.1)
    raise AssertionError(f"mariadbd did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDB]:
    with running_mariadb() as server:
        yield server


@contextmanager
def running_mariadb() -> Iterator[MariaDB]:
    root = Path(tempfile.mkdtemp(prefix="onwatch-mariadb-"))
    root.chmod(0o755)
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "mysql")
    done = subprocess.run(
        [
            INSTALL_DB,
            "--no-defaults",
            *_as_mysql(),
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    port, log = free_port(), root / "mysqld.log"
    proc = subprocess.Popen(
        [
            MARIADBD,
            "--no-defaults",
            *_as_mysql(),
            f"--datadir={data}",
            f"--socket={root / 'mysqld.sock'}",
            f"--pid-file={root / 'mysqld.pid'}",
            f"--log-error={log}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-log-bin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(proc, log)
        with pymysql.connect(unix_socket=str(root / "mysqld.sock"), user="root") as c:
            cur = c.cursor()
            for stmt in (
                f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
                f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION",
            ):
                cur.execute(stmt)
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
        assert row is not None
        yield MariaDB("127.0.0.1", port, USER, PASSWORD, str(row[0]))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


class MariaSource:
    def __init__(self, server: MariaDB, name: str) -> None:
        self.server, self.name = server, name

    def execute(self, *statements: str) -> list[list[object]]:
        with self.server.connect(self.name) as c, c.cursor() as cur:
            for s in statements:
                cur.execute(s)
            return [list(r) for r in cur.fetchall()]


@pytest.fixture
def maria_db(mariadb_server: MariaDB) -> Iterator[MariaSource]:
    """A source database: customers (3 rows), orders (250), a view, a trigger, a procedure."""
    name = f"bk_src_{secrets.token_hex(5)}"
    with mariadb_server.connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    db = MariaSource(mariadb_server, name)
    try:
        db.execute(
            "CREATE TABLE customers (id int primary key, name varchar(20), seen datetime(3))",
            "INSERT INTO customers VALUES (1, 'ada', '2024-01-02 03:04:05.678'), "
            "(2, 'bob', NULL), (3, 'çy', '1999-12-31 23:59:59')",
            "CREATE TABLE orders (id int auto_increment primary key, customer int, "
            "total decimal(10,2), note blob)",
            "INSERT INTO orders (customer, total, note) SELECT seq % 3 + 1, seq / 7, "
            "unhex(md5(seq)) FROM seq_1_to_250",
            "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 30",
            "CREATE TRIGGER no_negative BEFORE INSERT ON orders FOR EACH ROW "
            "SET NEW.total = greatest(NEW.total, 0)",
            "CREATE PROCEDURE order_count() SELECT count(*) FROM orders",
        )
        yield db
    finally:
        with mariadb_server.connect() as c, c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")


def maria_source(org: Organization, db: MariaSource, **fields: Any) -> Source:
    return services.add_source(org, "shop db", SourceKind.MARIADB, **maria_fields(db, **fields))


def maria_draft(org: Organization, db: MariaSource, **fields: Any) -> Source:
    """The source unsaved, as the source form has it checked before saving: checks tests
    try many variants of one source, which could not all be saved under one name."""
    return Source(org=org, name="shop db", kind=SourceKind.MARIADB, **maria_fields(db, **fields))


def maria_fields(db: MariaSource, **fields: Any) -> dict[str, Any]:
    s = db.server
    return {
        "host": s.host,
        "port": s.port,
        "database": db.name,
        "username": s.user,
        "password": s.password,
        "provider": "hetzner",
        **fields,
    }


def wrapped_tools(tmp_path: Path, dump_body: str, client_body: str = "") -> Path:
    """A bin directory whose mariadb-dump and mariadb are shell scripts around the real
    ones ($real is the real tool)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for kind, body in (("dump", dump_body), ("client", client_body)):
        real = mariadb_tools.tool(kind)
        assert real is not None
        script = bin_dir / Path(real).name
        script.write_text(f'#!/bin/sh\nreal="{real}"\n{body or 'exec $real "$@"'}\n')
        script.chmod(0o755)
    return bin_dir
