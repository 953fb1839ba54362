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
import sys
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
    """At the end of the run: its PostgreSQL templates, those that were made."""
    with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database_name()}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE IF EXISTS "{test_db_template_name()}" WITH (FORCE)')


# --- pytest-django's own test database -------------------------------------------------
# Each xdist worker of each pass made its test database by running every migration (about
# 6 s of CPU each, all workers at once as the pass starts, more on PostgreSQL). The run's
# first worker migrates one instead, exactly as Django's create_test_db would (`migrate
# --run-syncdb`, checks skipped), and every worker starts from a copy of it.


def migrated_test_db(database_url: str | None) -> str:
    """The migrated test database of this run: the SQLite file's path, or on PostgreSQL
    the database's name. Made by the first caller, under a lock the others wait on."""
    kind = "postgresql" if database_url else "sqlite"
    folder = run_dir() / f"testdb-{kind}"
    with (run_dir() / f"testdb-{kind}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "ready").exists():
            _migrate_test_db(folder, database_url)
    return test_db_template_name() if database_url else str(folder / "test.sqlite3")


def test_db_template_name() -> str:
    return f"ow_tdb_{run_dir().name.rsplit('-', 1)[-1].lower()}"


def _migrate_test_db(folder: Path, database_url: str | None) -> None:
    from tests.support.procs import ROOT

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    if database_url:
        with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{test_db_template_name()}"')
            admin.execute(f'CREATE DATABASE "{test_db_template_name()}"')
        url = urlunsplit(urlsplit(database_url)._replace(path=f"/{test_db_template_name()}"))
    else:
        url = f"sqlite:///{folder / 'test.sqlite3'}"
    # The test session's own settings (key file, data directory), on the template's database.
    command = ["-m", "django", "migrate", "--run-syncdb", "--skip-checks", "-v", "0"]
    done = subprocess.run(
        [sys.executable, *command, "--settings", "onwatch.settings"],
        env={**os.environ, "DATABASE_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise AssertionError(f"migrating the test database template failed:\n{done.stderr}")
    (folder / "ready").touch()


def copy_test_db_file(path: Path) -> None:
    """The SQLite test database at `path`, from the run's template."""
    made = Path(migrated_test_db(None))
    shutil.copy2(made, path)
    if (wal := made.with_name(f"{made.name}-wal")).exists():
        shutil.copy2(wal, path.with_name(f"{path.name}-wal"))


def copy_test_db(database_url: str, name: str) -> None:
    """A PostgreSQL test database `name` (left over ones replaced) from the run's template."""
    template = migrated_test_db(database_url)
    with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def drop_test_db(database_url: str, name: str) -> None:
    with psycopg.connect(admin_url(database_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
