"""Faults beyond those in test_runs.py (dump killed mid-stream, wrong repository
password, stale and live locks, unreachable offsite copy, corrupted pack, restored
database missing a table, dump of a missing database): a scratch target that runs out of
disk, a restored copy whose rows differ from the backup's, and a drill whose repository
is gone or whose password changed. Each ends as a failed run or drill plus an alert.

The full disks are real: small tmpfs mounts (we run as root), unmounted in teardown."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from onwatch.backups import services
from onwatch.backups.models import Outcome, SourceKind
from onwatch.core import postgres
from onwatch.core.models import JobState, Organization
from tests.support.backups import (
    PgSource,
    RestServer,
    assert_failed_with_alert,
    backup,
    big_sqlite,
    channel,
    drill,
    local_repo,
    pg_db,
    pg_source,
    plan_for,
    tmpfs,
)
from tests.support.procs import free_port

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = [pytest.mark.once, pytest.mark.django_db, pytest.mark.usefixtures("channel")]
__all__ = ["channel", "pg_db"]


def used(path: Path) -> int:
    return shutil.disk_usage(path).used


# --- a full scratch directory: SQLite files and directories ---------------------------------


@pytest.fixture
def small_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB scratch directory (resized by tests with `mount -o remount`)."""
    with tmpfs(tmp_path / "scratch", "1m") as path:
        monkeypatch.setenv("ONWATCH_SCRATCH_DIR", str(path))
        yield path


@pytest.mark.parametrize(
    ("size", "fails_in"),
    [
        ("1m", "restic dump"),  # the download itself does not fit
        ("4m", "the SQLite copy"),  # the download fits, the copy made from it does not
    ],
)
def test_a_full_scratch_disk_fails_a_sqlite_drill_and_says_where(
    org: Organization, tmp_path: Path, small_scratch: Path, size: str, fails_in: str
) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(small_scratch)], check=True)
    db = big_sqlite(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    assert backup(plan)[0].state == JobState.SUCCEEDED

    job, d = drill(plan)
    assert_failed_with_alert(
        job, f"the drill ran out of space on the scratch disk at {small_scratch}"
    )
    assert "ONWATCH_SCRATCH_DIR" in job.error
    said = "no space left on device" if fails_in == "restic dump" else "database or disk is full"
    assert said in job.error.lower(), job.error
    assert d.state == Outcome.FAILED and not d.verified
    assert list(small_scratch.iterdir()) == [], "the drill left files in the scratch directory"
    assert used(small_scratch) == 0


def test_a_full_scratch_disk_fails_a_directory_drill_and_says_where(
    org: Organization, tmp_path: Path, small_scratch: Path
) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    for i in range(2):
        (root / f"scan{i}.bin").write_bytes(os.urandom(1_500_000))
    source = services.add_source(org, "uploads", SourceKind.DIRECTORY, path=str(root))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    assert backup(plan)[0].state == JobState.SUCCEEDED

    job, _ = drill(plan)
    assert_failed_with_alert(
        job, f"the drill ran out of space on the scratch disk at {small_scratch}"
    )
    assert "no space left on device" in job.error
    assert "damaged" not in job.error  # restic ends with "There were N errors"; not damage
    assert list(small_scratch.iterdir()) == []


# --- a full scratch PostgreSQL server -------------------------------------------------------


@dataclass
class SmallServer:
    port: int
    data: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def databases(self) -> set[str]:
        with psycopg.connect(self.url, autocommit=True) as c:
            return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def as_postgres(*args: str, check: bool = True) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True)


@pytest.fixture
def small_pg_server(tmp_path: Path) -> Iterator[SmallServer]:
    """A throwaway PostgreSQL whose data directory sits on a 40 MiB tmpfs (about 17 MiB
    free after initdb) and whose WAL sits on an ordinary disk: the data disk fills up,
    the server itself keeps running, as on a scratch server short of room."""
    base = Path(tempfile.mkdtemp(prefix="onwatch-small-pg-"))
    bin_dir = Path(postgres.tool("initdb")).parent
    try:
        with tmpfs(base / "data", "40m") as data:
            shutil.chown(base, "postgres")
            shutil.chown(data, "postgres")
            port = free_port()
            pgdata = data / "pg"
            as_postgres(
                str(bin_dir / "initdb"), "-D", str(pgdata), f"--waldir={base / 'wal'}",
                "-U", "postgres", "--auth=trust", "-E", "UTF8",
            )  # fmt: skip
            as_postgres(
                str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(base / "log"), "-w",
                "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off",
                "start",
            )  # fmt: skip
            try:
                yield SmallServer(port, data)
            finally:
                stop = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"]
                as_postgres(*stop, check=False)  # it may have stopped by itself
    finally:
        if (base / "log").exists():
            shutil.copy(base / "log", tmp_path / "small-pg.log")  # for a failed test's reader
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_scratch_server_fails_a_postgresql_drill_and_says_where(
    org: Organization, pg_db: PgSource, tmp_path: Path, small_pg_server: SmallServer
) -> None:
    with pg_db.connect() as c:  # about 30 MiB once restored, indexes included
        c.execute(
            "INSERT INTO orders (customer, total) "
            "SELECT g % 3 + 1, g * 1.5 FROM generate_series(1, 500000) g"
        )
    source = pg_source(org, pg_db, scratch_url=small_pg_server.url)
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    assert backup(plan)[0].state == JobState.SUCCEEDED
    before = used(small_pg_server.data)
    assert shutil.disk_usage(small_pg_server.data).free < 20 << 20

    job, d = drill(plan)
    assert_failed_with_alert(
        job,
        "the drill ran out of space on the data disk of the scratch server "
        f"127.0.0.1:{small_pg_server.port}",
    )
    assert "No space left on device" in job.error and "could not extend file" in job.error
    assert "give the source a scratch server with more room" in job.error
    assert not d.verified
    # The scratch database was dropped and its space given back; the server still runs.
    assert not {n for n in small_pg_server.databases() if n.startswith("onwatch_drill_")}
    assert used(small_pg_server.data) <= before + (1 << 20)


# --- the restored rows are not the backed-up rows -------------------------------------------


def test_a_restored_table_whose_rows_differ_fails_the_drill_naming_it(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    plan = plan_for(pg_source(org, pg_db), [local_repo(org, tmp_path / "repo")])
    _, first = backup(plan)
    with pg_db.connect() as c:
        c.execute("UPDATE orders SET total = total + 1 WHERE id = 7")
    _, second = backup(plan)
    assert second.contents["tables"] == first.contents["tables"]
    # The newest snapshot paired with the record of the run before: same row counts, one
    # value changed, as if a dump had silently altered data.
    second.contents = first.contents
    second.save()
    job, d = drill(plan)
    assert_failed_with_alert(job, "checksum of public.orders: the rows differ")
    assert [c["check"] for c in d.checks if not c["ok"]] == ["checksum of public.orders"]


def test_a_restored_sqlite_table_whose_rows_differ_fails_the_drill_naming_it(
    org: Organization, tmp_path: Path
) -> None:
    db = tmp_path / "app.sqlite3"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (id integer primary key, body text)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}",) for i in range(30)])
        conn.commit()
    plan = plan_for(
        services.add_source(org, "app", SourceKind.SQLITE, path=str(db)),
        [local_repo(org, tmp_path / "repo")],
    )
    _, first = backup(plan)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE notes SET body = 'N3' WHERE body = 'n3'")
        conn.commit()
    _, second = backup(plan)
    second.contents = first.contents
    second.save()
    job, d = drill(plan)
    assert_failed_with_alert(job, "checksum of notes: the rows differ")
    assert [c["check"] for c in d.checks if not c["ok"]] == ["checksum of notes"]


# --- the drill's repository -----------------------------------------------------------------


def test_a_drill_from_an_unreachable_repository_fails(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    with RestServer(tmp_path / "rest") as server:
        offsite = services.add_repository(org, "offsite", server.url, provider="ovh")
        plan = plan_for(pg_source(org, pg_db), [offsite])
        assert backup(plan)[0].state == JobState.SUCCEEDED
    job, d = drill(plan)  # the server is gone now
    assert_failed_with_alert(job, "cannot be reached")
    assert d.repository == offsite and not d.verified


def test_a_drill_with_a_changed_repository_password_fails(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    assert backup(plan)[0].state == JobState.SUCCEEDED
    repository.password = "someone-changed-it"
    repository.save()
    job, _ = drill(plan)
    assert_failed_with_alert(job, "password is wrong")
