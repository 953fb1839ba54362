"""Real components for the backup tests (no tests here): throwaway PostgreSQL source
databases on the test server, SQLite files and directories, local restic repositories and
a REST repository served by `rclone serve restic`."""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.backups import restic, services
from onwatch.backups.models import (
    BackupRun,
    Drill,
    Plan,
    Repository,
    Source,
    SourceKind,
)
from onwatch.core import jobs, postgres
from onwatch.core.models import Job, JobState, Organization
from tests.support.child import backups as child_backups
from tests.support.child import call
from tests.support.procs import free_port, isolated


def _pg_server() -> str:
    """The PostgreSQL server for sources and scratch databases (not onwatch's own database):
    ONWATCH_TEST_PG_SERVER, else the server DATABASE_URL names. scripts/test sets both."""
    named = os.environ.get("ONWATCH_TEST_PG_SERVER", "")
    if named:
        return named
    base = os.environ.get("DATABASE_URL", "")
    if base.startswith("postgres"):
        return urlunsplit(urlsplit(base)._replace(path="/postgres"))
    return ""


PG_SERVER = _pg_server()
RCLONE = str(Path(sys.executable).parent / "rclone")


def pg_parts() -> tuple[str, int, str]:
    u = urlsplit(PG_SERVER)
    return u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres"


def admin() -> psycopg.Connection:
    if not PG_SERVER:
        pytest.fail(
            "These tests need a PostgreSQL server: set ONWATCH_TEST_PG_SERVER to its "
            "maintenance database URL, or run scripts/test, which starts one."
        )
    return psycopg.connect(PG_SERVER, autocommit=True)


@dataclass
class PgSource:
    name: str

    def connect(self) -> psycopg.Connection:
        host, port, user = pg_parts()
        return psycopg.connect(host=host, port=port, user=user, dbname=self.name, autocommit=True)


@pytest.fixture
def pg_db() -> Iterator[PgSource]:
    """A source database with two tables: customers (3 rows) and orders (250)."""
    name = f"bk_src_{secrets.token_hex(5)}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    src = PgSource(name)
    try:
        with src.connect() as c:
            c.execute("CREATE TABLE customers (id int primary key, name text)")
            c.execute("INSERT INTO customers VALUES (1, 'ada'), (2, 'bob'), (3, 'cy')")
            c.execute("CREATE TABLE orders (id serial primary key, customer int, total numeric)")
            c.execute(
                "INSERT INTO orders (customer, total) "
                "SELECT g % 3 + 1, g FROM generate_series(1, 250) g"
            )
        yield src
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def scratch_databases() -> set[str]:
    with admin() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'onwatch_drill_%'")
        return {r[0] for r in rows}


def own_scratch_database(job: Job) -> str:
    """The scratch database this drill made, by the line its log ends it with. Other tests'
    drills on the shared server come and go meanwhile, so a before/after count of every
    scratch database is not this drill's."""
    found = re.findall(r"dropped scratch database (onwatch_drill_[0-9a-f]+)", job.log)
    assert len(found) == 1, f"no single 'dropped scratch database' line: {job.log}"
    return str(found[0])


def pg_source(org: Organization, db: PgSource, **fields: Any) -> Source:
    host, port, user = pg_parts()
    return services.add_source(
        org,
        "shop db",
        SourceKind.POSTGRESQL,
        host=host,
        port=port,
        database=db.name,
        username=user,
        provider="hetzner",
        **fields,
    )


def sqlite_file(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (id integer primary key, body text)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(40)])
        db.execute("CREATE TABLE tags (name text)")
        db.execute("INSERT INTO tags VALUES ('a'), ('b')")
        db.commit()
    return path


def directory(path: Path) -> Path:
    (path / "sub" / "deeper").mkdir(parents=True)
    for i in range(12):
        (path / ("sub" if i % 2 else "") / f"file{i}.txt").write_text(f"contents {i}\n" * (i + 1))
    (path / "sub" / "deeper" / "blob.bin").write_bytes(os.urandom(20000))
    return path


TEMPLATE_PASSWORD = "template-" + secrets.token_hex(8)


@cache
def repo_template() -> Path:
    """One real `restic init` per test process: it calibrates its key derivation, about
    3 s of CPU, which once per test was a third of the suite's CPU. Local repositories are
    copies of it (same password). Initialising itself is tested where it happens: the
    repository form, restic.init, and the SFTP, S3 and REST repositories."""
    root = Path(tempfile.mkdtemp(prefix="onwatch-repo-template-"))
    atexit.register(shutil.rmtree, root, True)
    restic.init(restic.Repo(str(root / "repo"), TEMPLATE_PASSWORD, root / "cache"))
    return root / "repo"


def local_repo(
    org: Organization, path: Path, name: str = "local", provider: str = "hetzner"
) -> Repository:
    """A local repository restic initialised (a copy of the template), as onwatch knows it
    after "connect an existing repository"."""
    shutil.copytree(repo_template(), path)
    return services.add_repository(
        org, name, str(path), provider, "fsn1", TEMPLATE_PASSWORD, initialise=False
    )


def damage_data_packs(repo: Path, only_not: frozenset[Path] = frozenset()) -> None:
    """Flip bytes in the middle of every pack (but those in `only_not`), as a failing disk
    or a bad upload would."""
    for pack in set((repo / "data").glob("*/*")) - only_not:
        data = bytearray(pack.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
        pack.write_bytes(bytes(data))


def plan_for(source: Source, copies: list[Repository], **fields: Any) -> Plan:
    return services.add_plan(source, "nightly", copies, **fields)


class RestServer:
    """`rclone serve restic` on a free loopback port, started and stopped by the test;
    `append_only` refuses every deletion but of locks, as a ransomware-proof copy does."""

    def __init__(self, root: Path, append_only: bool = False) -> None:
        self.root = root
        self.append_only = append_only
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rest:http://127.0.0.1:{self.port}/"

    def __enter__(self) -> RestServer:
        self.proc = subprocess.Popen(
            [RCLONE, "serve", "restic", str(self.root), f"--addr=127.0.0.1:{self.port}"]
            + (["--append-only"] if self.append_only else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError("rclone serve restic did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def rest_server(tmp_path: Path) -> Iterator[RestServer]:
    with RestServer(tmp_path / "rest-root") as server:
        yield server


@pytest.fixture
def channel(org: Organization) -> object:
    """A channel, so alerts become deliveries that tests can see."""
    return add_channel(org, "ops", "json://127.0.0.1:9/hook")


def alerts_titled(text: str) -> list[Delivery]:
    return [d for d in Delivery.objects.all() if text in d.title or text in d.body]


def run_job(kind: str, plan: Plan) -> Job:
    jobs.enqueue(kind, {"plan": plan.pk}, org=plan.org)
    [job] = jobs.run_pending(kinds=[kind])
    return job


def backup(plan: Plan) -> tuple[Job, BackupRun]:
    job = run_job("backups.run", plan)
    return job, BackupRun.objects.get(job=job)


def drill(plan: Plan) -> tuple[Job, Drill]:
    job = run_job("backups.drill", plan)
    return job, Drill.objects.get(job=job)


def assert_failed_with_alert(job: Job, words: str) -> None:
    assert job.state == JobState.FAILED, job.log
    assert words in job.error, job.error
    assert job.alerted
    # Named by its work ("Backup of nightly failed"), linking the job's page.
    assert alerts_titled(f"/jobs/{job.pk}/"), "no alert was raised"
    assert all(d.title.endswith(" failed") for d in alerts_titled(f"/jobs/{job.pk}/"))


def killing_pg_dump(tmp_path: Path) -> Path:
    """A bin directory whose pg_dump is the real one cut off after 4 KiB and then killed,
    as the OOM killer or a crash would."""

    real = postgres.tool("pg_dump")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(f'#!/bin/sh\n"{real}" "$@" | head -c 4096\nkill -9 $$\n')
    script.chmod(0o755)
    (bin_dir / "pg_restore").symlink_to(postgres.tool("pg_restore"))
    return bin_dir


def backup_text(repo: restic.Repo, text: bytes, tags: list[str]) -> restic.BackupSummary:
    r, w = os.pipe()
    running = restic.start_backup_stdin(repo, "x.txt", tags, stdin=r)
    os.close(r)
    os.write(w, text)
    os.close(w)
    return restic.finish_backup(running)


def hold_lock(repo: restic.Repo) -> subprocess.Popen[bytes]:
    """A real restic that takes the repository lock and then waits on its stdin."""
    proc = subprocess.Popen(
        [restic.binary(), "backup", "--stdin"],
        env=restic.restic_env(repo),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not restic.locks(repo):
        assert time.monotonic() < deadline, "restic took no lock"
        time.sleep(0.02)
    return proc


def corrupt_packs(repo_dir: Path) -> int:
    packs = [p for p in (repo_dir / "data").rglob("*") if p.is_file()]
    for p in packs:
        p.chmod(0o600)
        data = bytearray(p.read_bytes())
        data[40:56] = b"X" * 16
        p.write_bytes(bytes(data))
    return len(packs)


@pytest.fixture
def migrated_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An isolated onwatch environment whose database is migrated: a copy of the run's
    migrated onwatch (the subject of these tests is what comes after `onwatch migrate`)."""
    with isolated(tmp_path, migrated=True) as env:
        yield env


def make_plan(env: dict[str, str], kind: str, repo: Path, **source: object) -> None:
    """A plan and one good backup of it, made the way onwatch makes them."""
    call(child_backups.make_plan, env, kind, str(repo), dict(source))


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def big_sqlite(path: Path) -> Path:
    """About 3 MB of incompressible rows."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE blobs (id integer primary key, data blob)")
        db.executemany("INSERT INTO blobs (data) VALUES (?)", [(os.urandom(100_000),)] * 30)
        db.commit()
    return path


def shell_blocks(text: str, heading: str) -> list[str]:
    """The ```sh blocks under a heading, up to the next heading."""
    section = re.split(r"\n#+ ", text.split(heading + "\n", 1)[1], maxsplit=1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def run_kit(script: str, cwd: Path) -> str:
    """In a shell with no onwatch and no restic variables: only what the kit says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "AWS_"))}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**env, "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
