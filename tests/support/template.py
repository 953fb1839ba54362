"""One migrated onwatch per test run, copied for every test whose subject is not the first
start or the migrations themselves.

`onwatch migrate` on an empty database costs ~5 s of CPU (more on PostgreSQL), and dozens
of tests only need a migrated onwatch to start from. The first worker that asks runs the
real `onwatch migrate` once, under a file lock the other workers of the run wait on; each
test then gets a copy: the SQLite file, or on PostgreSQL a database made with
`CREATE DATABASE ... TEMPLATE`, with the key file and secret key that fit it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

SQLITE = "onwatch.sqlite3"
# Shared by the run's xdist workers: tests.support.env names it in the main process, before
# the workers start, and removes it at the end.
RUN_VARIABLE = "OW_TESTS_RUN_DIR"


def run_dir() -> Path:
    return Path(os.environ[RUN_VARIABLE])


@dataclass(frozen=True)
class Template:
    data_dir: Path  # the migrated data directory: key file, secret key (and SQLite file)
    database: str | None  # on PostgreSQL, the name of the migrated template database


def database_name() -> str:
    """The name of this run's PostgreSQL template."""
    return f"ow_tpl_{run_dir().name.rsplit('-', 1)[-1].lower()}"


def admin_url(database_url: str) -> str:
    # The server's maintenance database always exists; the one DATABASE_URL names need not.
    return urlunsplit(urlsplit(database_url)._replace(path="/postgres"))


def migrated(database_url: str | None) -> Template:
    """This run's template for the backend `database_url` names (None: SQLite), made by
    the first caller."""
    kind = "postgresql" if database_url else "sqlite"
    folder = run_dir() / f"template-{kind}"
    with (run_dir() / f"template-{kind}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "ready").exists():
            _build(folder, database_url)
    name = database_name() if database_url else None
    return Template(folder / "data", name)


def _build(folder: Path, database_url: str | None) -> None:
    from tests.support.procs import ONWATCH, ROOT, onwatch_env

    shutil.rmtree(folder, ignore_errors=True)
    url = None
    if database_url:
        name = database_name()
        with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    env = onwatch_env(folder / "data", url, ONWATCH_WORK_DIR=str(folder / "work"))
    done = subprocess.run(
        [*ONWATCH, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise AssertionError(f"onwatch migrate of the template failed:\n{done.stderr}")
    (folder / "ready").touch()


def copy_into(template: Template, data_dir: Path, key_file: Path) -> None:
    """The template's files as a fresh `onwatch migrate` would have left them in
    `data_dir` (the database itself, on PostgreSQL, is the caller's to copy)."""
    data_dir.mkdir(parents=True, mode=0o700)
    if template.database is None:
        shutil.copy2(template.data_dir / SQLITE, data_dir / SQLITE)
        if (wal := template.data_dir / f"{SQLITE}-wal").exists():
            shutil.copy2(wal, data_dir / wal.name)
    shutil.copy2(template.data_dir / "secret_key", data_dir / "secret_key")
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(template.data_dir / "keyring.json", key_file)


def drop(database_url: str) -> None:
    """At the end of the run: its PostgreSQL template, if one was made."""
    with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database_name()}" WITH (FORCE)')
