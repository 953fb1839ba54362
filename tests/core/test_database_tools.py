"""core/postgres.py and core/mariadb.py, the one wrapper per database tool: given plain
connection data (no backup model anywhere), they create a database, dump it with the real
pg_dump / mariadb-dump and load the dump into another with pg_restore / mariadb, as a
deploy's pre-deploy copy or the security center would."""

from __future__ import annotations

import ast
import inspect
import secrets
import subprocess
from pathlib import Path

import pytest

import onwatch
from onwatch.core import mariadb, postgres
from tests.support.backups import admin, pg_parts
from tests.support.mariadb import MariaDB, mariadb_server

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

__all__ = ["mariadb_server"]

ONWATCH = Path(onwatch.__file__).parent
TOOL_MODULES = ("core/postgres.py", "core/mariadb.py")


def pipe(dump: list[str], load: list[str], env: dict[str, str]) -> None:
    """dump | load, as a shell would; both must succeed."""
    with subprocess.Popen(dump, stdout=subprocess.PIPE, env=env) as dumping:
        loaded = subprocess.run(load, stdin=dumping.stdout, env=env, capture_output=True)
    assert dumping.returncode == 0 and loaded.returncode == 0, loaded.stderr.decode()


def test_postgresql_tools_copy_a_database_given_plain_connection_data() -> None:
    admin().close()  # says how to point the tests at a server when none is set
    host, port, user = pg_parts()
    maintenance = postgres.Server(host, port, user, "", "postgres")
    source = postgres.Server(host, port, user, "", f"tools_src_{secrets.token_hex(4)}")
    copy = f"tools_copy_{secrets.token_hex(4)}"
    postgres.create_database(maintenance, source.database)
    postgres.create_database(maintenance, copy)
    try:
        with source.connect() as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, 'kept'), (2, 'also kept')")
        restore = postgres.restore_command(source, copy)
        pipe(postgres.dump_command(source), restore, source.tool_env())
        with source.connect(copy) as conn:
            rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        assert rows == [(1, "kept"), (2, "also kept")]
    finally:
        postgres.drop_database(maintenance, source.database)
        postgres.drop_database(maintenance, copy)
    with admin() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname IN (%s, %s)", [source.database, copy]
        ).fetchone()
    assert left == (0,)


def test_mariadb_tools_copy_a_database_given_plain_connection_data(
    mariadb_server: MariaDB,
) -> None:
    name = f"tools_src_{secrets.token_hex(4)}"
    server = mariadb.url_server(mariadb_server.url(name))
    assert (server.user, server.database) == (mariadb_server.user, name)
    copy = f"tools_copy_{secrets.token_hex(4)}"
    mariadb.create_database(server, name)
    mariadb.create_database(server, copy)
    try:
        with pytest.raises(mariadb.DatabaseExists, match=f"the database {name} exists already"):
            mariadb.create_database(server, name)
        with server.connect() as conn:
            mariadb.query(conn, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
            mariadb.query(conn, "INSERT INTO notes VALUES (1, 'kept'), (2, 'also kept')")
        with mariadb.option_file(server) as options:
            assert server.password not in " ".join(mariadb.dump_command(options, name))
            load = mariadb.restore_command(options, copy)
            pipe(mariadb.dump_command(options, name), load, mariadb.tool_env())
        with server.connect(copy) as conn:
            rows = mariadb.query(conn, "SELECT id, body FROM notes ORDER BY id")
        assert rows == [[1, "kept"], [2, "also kept"]]
    finally:
        mariadb.drop_database(server, name)
        mariadb.drop_database(server, copy)


def test_a_wrong_mariadb_password_says_what_to_check(mariadb_server: MariaDB) -> None:
    server = mariadb.Server(mariadb_server.host, mariadb_server.port, "onwatch", "wrong", "")
    with pytest.raises(mariadb.MariaDBError) as refused:
        server.connect()
    assert str(refused.value) == (
        f"the server at {server.where} refused user onwatch with this password; check the "
        "user name and password"
    )


@pytest.mark.parametrize("path", TOOL_MODULES)
def test_database_tools_import_no_app_and_take_no_models(path: str) -> None:
    tree = ast.parse((ONWATCH / path).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    apps = {m for m in imported if m and m.startswith("onwatch.")} - {"onwatch.config"}
    assert all(m.startswith("onwatch.core.") for m in apps), apps
    module = mariadb if path.endswith("mariadb.py") else postgres
    for name, function in inspect.getmembers(module, inspect.isfunction):
        if function.__module__ == module.__name__:
            hints = " ".join(str(v) for v in inspect.get_annotations(function).values())
            assert "Source" not in hints and "Model" not in hints, name


def code_strings(path: Path) -> str:
    """Every string literal in the module's code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    return "\n".join(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    )


def test_only_the_tool_modules_build_database_tool_command_lines() -> None:
    marks = ("--format=custom", "--no-privileges", "--single-transaction", "--defaults-file")
    builders = sorted(
        str(path.relative_to(ONWATCH))
        for path in ONWATCH.rglob("*.py")
        if any(mark in code_strings(path) for mark in marks)
    )
    assert builders == sorted(TOOL_MODULES)
