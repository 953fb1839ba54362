"""Mistakes people make when starting onwatch: each ends in exit code 2 and one line on
stderr that says what is wrong and how to fix it, and leaves nothing behind."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import onwatch_env, run

SERVERS = ["up", "web", "worker", "migrate"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # The suite's own database, not a fresh one: these runs must fail before touching it.
    return onwatch_env(tmp_path / "data", os.environ.get("DATABASE_URL"))


def refused(args: list[str], env: dict[str, str]) -> str:
    """Run onwatch, expecting the one-line refusal; return that line."""
    done = run(args, env, timeout=30)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("onwatch: ")
    assert done.stdout == ""
    assert not Path(env["ONWATCH_DATA_DIR"]).exists()
    return lines[0]


@pytest.mark.parametrize("command", SERVERS)
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://x", "is not a database onwatch supports; use postgresql://"),
        ("postgresql://u:hunter2@h:notaport/db", "has a bad port; use a number like 5432"),
        ("postgresql://u@h:5432/", "names no database"),
        ("sqlite://", "names no file"),
    ],
)
def test_a_malformed_database_url_is_refused(
    env: dict[str, str], command: str, url: str, says: str
) -> None:
    line = refused([command], {**env, "DATABASE_URL": url})
    assert says in line
    assert "hunter2" not in line


@pytest.mark.parametrize("command", SERVERS)
def test_an_unreachable_postgresql_is_refused(env: dict[str, str], command: str) -> None:
    line = refused([command], {**env, "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"})
    assert "Cannot reach the PostgreSQL database in DATABASE_URL" in line
    assert "check the address, user and password" in line


@pytest.fixture
def a_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    yield path


@pytest.mark.parametrize("command", SERVERS)
def test_a_data_directory_under_a_file_is_refused(
    env: dict[str, str], a_file: Path, command: str
) -> None:
    line = refused([command], {**env, "ONWATCH_DATA_DIR": str(a_file / "data")})
    assert f"{a_file} is a file; set ONWATCH_DATA_DIR to a folder" in line


@pytest.mark.parametrize("command", SERVERS)
def test_an_unwritable_data_directory_is_refused_even_for_root(
    env: dict[str, str], command: str
) -> None:
    # Permissions do not stop root; /proc refuses new folders to everyone.
    line = refused([command], {**env, "ONWATCH_DATA_DIR": "/proc/onwatch-test/data"})
    assert "The data directory /proc/onwatch-test/data is not writable" in line
    assert "set ONWATCH_DATA_DIR to a folder you can write" in line


@pytest.mark.parametrize("command", ["up", "migrate"])
def test_a_sqlite_file_in_an_unwritable_folder_is_refused(
    env: dict[str, str], command: str
) -> None:
    url = "sqlite:////proc/onwatch-test/onwatch.sqlite3"
    line = refused([command], {**env, "DATABASE_URL": url})
    assert "The database folder /proc/onwatch-test is not writable" in line
    assert "set DATABASE_URL to a folder you can write" in line


@pytest.mark.parametrize("command", ["up", "web"])
def test_a_port_in_use_is_refused(env: dict[str, str], command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused([command], {**env, "ONWATCH_PORT": str(port)})
    assert f"Port {port} on 127.0.0.1 is in use by another program" in line
    assert f"ONWATCH_PORT={port + 1}" in line


@pytest.mark.parametrize("command", SERVERS)
@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ONWATCH_PORT", "abc", "ONWATCH_PORT='abc' is not a whole number; use e.g. 8000"),
        ("ONWATCH_PORT", "70000", "ONWATCH_PORT=70000 is out of range"),
        ("ONWATCH_DEBUG", "maybe", "ONWATCH_DEBUG='maybe' is not a yes/no value"),
        ("ONWATCH_BASE_URL", "notaurl", "ONWATCH_BASE_URL='notaurl' is not a web address"),
        ("ONWATCH_JOB_LEASE_SECONDS", "1", "ONWATCH_JOB_LEASE_SECONDS=1 is out of range"),
    ],
)
def test_a_malformed_setting_is_refused(
    env: dict[str, str], command: str, name: str, value: str, says: str
) -> None:
    assert says in refused([command], {**env, name: value})


def test_a_worker_before_any_migration_says_to_migrate_first(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    line = refused(["worker"], env)
    assert "There is no onwatch database at" in line
    assert "run `onwatch up` or `onwatch migrate` first" in line


def test_the_help_lists_every_command() -> None:
    done = run(["--help"], onwatch_env(Path("/nonexistent"), None))
    assert done.returncode == 0
    for command in ("up", "web", "worker", "scheduler", "migrate", "createowner", "keys"):
        assert command in done.stdout
    assert "audit" in done.stdout and "notify" in done.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["up"],
        ["web"],
        ["worker"],
        ["scheduler"],
        ["prober"],
        ["migrate"],
        ["createowner"],
        ["keys", "rotate"],
        ["audit", "verify"],
        ["notify", "test"],
    ],
    ids=" ".join,
)
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    env = onwatch_env(tmp_path / "data", None)
    done = run([*command, "--help"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: onwatch {' '.join(command)}")
    assert not (tmp_path / "data").exists()


def test_no_command_is_a_usage_error_not_a_traceback() -> None:
    done = run([], onwatch_env(Path("/nonexistent"), None))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "usage: onwatch" in done.stderr
