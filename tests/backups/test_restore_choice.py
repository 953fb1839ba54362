"""Which snapshot a restore picks, and what a failed restore leaves: with the real
`rclone serve restic --append-only` as the offsite copy (it refuses to remove anything, so
a cut-off dump's snapshot stays, tagged like a good one), a real pg_dump cut off
mid-stream, and a real pg_restore that stops half-way."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from onwatch.backups import restic, restore_requests, restores, services, targets
from onwatch.backups.kit import recovery_kit
from onwatch.backups.models import Plan, Repository, Restore, SourceKind
from onwatch.backups.restore_views import snapshot_rows
from onwatch.backups.runs import snapshot_name
from onwatch.core import jobs, postgres
from onwatch.core.models import JobState, Organization
from tests.support.backups import (
    RCLONE,
    PgSource,
    RestServer,
    admin,
    alerts_titled,
    assert_failed_with_alert,
    backup,
    big_sqlite,
    channel,
    killing_pg_dump,
    local_repo,
    make_plan,
    pg_db,
    pg_parts,
    pg_source,
    plan_for,
    run_kit,
    shell_blocks,
    sqlite_file,
    tmpfs,
)
from tests.support.child import backups as child_backups
from tests.support.child import call
from tests.support.fixtures import signed_in
from tests.support.mariadb import MariaSource, maria_db, maria_source, mariadb_server, wrapped_tools
from tests.support.procs import free_port, isolated, run
from tests.support.remote_servers import wait_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("channel")]
__all__ = ["channel", "maria_db", "mariadb_server", "pg_db"]


class AppendOnlyRestServer(RestServer):
    """`rclone serve restic --append-only`: snapshots can be added, never removed (403)."""

    def __enter__(self) -> AppendOnlyRestServer:
        address = f"--addr=127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [RCLONE, "serve", "restic", "--append-only", str(self.root), address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
        )
        wait_port(self.port, "rclone serve restic --append-only")
        return self


@pytest.fixture
def append_only(tmp_path: Path) -> Iterator[AppendOnlyRestServer]:
    with AppendOnlyRestServer(tmp_path / "append-only-root") as server:
        yield server


@pytest.fixture
def new_database() -> Iterator[str]:
    """A database name no one has; dropped afterwards if a test left it."""
    name = f"bk_restored_{secrets.token_hex(4)}"
    yield name
    with admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_exists(name: str) -> bool:
    with admin() as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return found is not None


def rows_in(name: str, table: str) -> int:
    with PgSource(name).connect() as c:
        row = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])  # type: ignore[index]


def pg_url(name: str) -> str:
    host, port, user = pg_parts()
    return f"postgresql://{user}@{host}:{port}/{name}"


def bigger(pg_db: PgSource) -> None:
    """Enough data that 4 KiB of dump, or 20 KB of restore, is a fraction of it."""
    with pg_db.connect() as c:
        c.execute(
            "INSERT INTO orders (customer, total) SELECT 1, g FROM generate_series(1, 5000) g"
        )


def cut_off_backup(plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """A run whose pg_dump is killed mid-stream; the job and its snapshot's id."""
    with monkeypatch.context() as m:
        m.setenv("ONWATCH_PG_BIN_DIR", str(killing_pg_dump(tmp_path)))
        job, run = backup(plan)
    [copy] = run.copies.all()
    return job, copy.snapshot_id


# --- a cut-off dump in an append-only repository ---------------------------------------------


def test_a_cut_off_dump_that_stays_in_an_append_only_repository_is_named_and_never_restored(
    org: Organization,
    pg_db: PgSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    append_only: AppendOnlyRestServer,
    new_database: str,
) -> None:
    bigger(pg_db)
    offsite = services.add_repository(org, "offsite", append_only.url, provider="ovh")
    plan = plan_for(pg_source(org, pg_db), [offsite])
    job, good_run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    good = good_run.copies.get().snapshot_id

    job, bad = cut_off_backup(plan, tmp_path, monkeypatch)
    in_repository = restic.snapshots(services.repo_of(offsite), [plan.tag])
    assert [s.id[:8] for s in in_repository] == [good[:8], bad[:8]], "the server removed it"
    # The failure alert says which snapshot stayed, so nobody takes it for a backup.
    assert_failed_with_alert(job, "pg_dump was killed by signal 9")
    assert f"the incomplete snapshot {bad[:8]} could not be removed" in job.error, job.error
    assert alerts_titled(f"incomplete snapshot {bad[:8]}"), "the alert does not name it"

    # `onwatch restore` and the UI offer and pick only the verified backup.
    chosen = restores.choose(plan)
    assert chosen.snapshot.id.startswith(good) and chosen.run_id == good_run.pk
    assert [r.snapshot.id[:8] for r in snapshot_rows(plan, offsite)] == [good[:8]]
    with pytest.raises(restores.RestoreRefused, match=f"{bad[:8]} is from backup #.*which failed"):
        restores.choose(plan, bad[:8])
    restores.restore(plan, chosen, pg_url(new_database))
    assert rows_in(new_database, "orders") == 5250


def test_the_recovery_kit_names_the_verified_snapshots_and_its_commands_restore_one(
    org: Organization,
    pg_db: PgSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    append_only: AppendOnlyRestServer,
    new_database: str,
) -> None:
    bigger(pg_db)
    offsite = services.add_repository(org, "offsite", append_only.url, provider="ovh")
    plan = plan_for(pg_source(org, pg_db), [offsite])
    _, good_run = backup(plan)
    good = good_run.copies.get().snapshot_id
    _, bad = cut_off_backup(plan, tmp_path, monkeypatch)

    kit = recovery_kit(offsite, timezone.now(), "owner@acme.example")
    assert "latest" not in kit
    assert f"| `{good}` | {good_run.started_at:%Y-%m-%d %H:%M} UTC |" in kit
    assert bad not in kit
    work = tmp_path / "fresh-machine"
    work.mkdir()
    [setup] = shell_blocks(kit, "## Before you start")
    [steps] = shell_blocks(kit, "### Plan nightly: shop db (PostgreSQL)")
    assert f"dump {good} /{snapshot_name(plan)} | pg_restore" in steps
    run_kit(setup + steps.replace(" restored", f" {new_database}"), work)
    assert rows_in(new_database, "orders") == 5250


def test_an_unrecorded_snapshot_is_neither_offered_nor_picked(
    org: Organization, members: dict[str, Any], pg_db: PgSource, tmp_path: Path
) -> None:
    """A snapshot with the plan's tag that onwatch has no record of (a worker killed
    mid-run leaves one) is as untrustworthy as a failed one."""
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    _, run = backup(plan)
    good = run.copies.get().snapshot_id
    stray = unrecorded_snapshot(plan, repository, tmp_path)
    assert restores.choose(plan).snapshot.id.startswith(good)
    with pytest.raises(restores.RestoreRefused, match=f"no verified snapshot '{stray[:8]}'"):
        restores.choose(plan, stray[:8])
    shown = signed_in(members["admin"]).get(reverse("backup_restore_start", args=[plan.pk]))
    page = shown.content.decode()
    assert good[:8] in page and stray[:8] not in page


def unrecorded_snapshot(plan: Plan, repository: Repository, tmp_path: Path) -> str:
    half = tmp_path / "half.pgdump"
    half.write_bytes(b"PGDMP" + os.urandom(2000))
    tags = ["onwatch", plan.tag, "run:999"]
    with half.open("rb") as f:
        running = restic.start_backup_stdin(
            services.repo_of(repository), snapshot_name(plan), tags, f
        )
        return restic.finish_backup(running).snapshot_id


def test_onwatch_restore_passes_over_a_newer_snapshot_onwatch_never_verified(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        assert run(["migrate"], env).returncode == 0
        make_plan(env, "sqlite", tmp_path / "repo", path=str(sqlite_file(tmp_path / "app.db")))
        # What a worker killed mid-run leaves: the plan's tags on a file that is no database.
        call(child_backups.add_unverified_snapshot, env)
        target = tmp_path / "restored.sqlite3"
        done = run(["restore", "nightly", "--to", str(target), "--yes"], env)
    assert done.returncode == 0, done.stderr
    assert "(verified backup #1)" in done.stdout
    with closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT count(*) FROM notes").fetchone() == (40,)


# --- a restore that fails half-way ------------------------------------------------------------


def stopping_pg_restore(tmp_path: Path) -> Path:
    """A bin directory whose pg_restore is the real one, given only the first 20 KB of the
    dump: it creates the tables, then stops with an error, as a cut-off download would."""

    bin_dir = tmp_path / "stopping-bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_restore"
    script.write_text(f'#!/bin/sh\nhead -c 20000 | "{postgres.tool("pg_restore")}" "$@"\n')
    script.chmod(0o755)
    (bin_dir / "pg_dump").symlink_to(postgres.tool("pg_dump"))
    return bin_dir


def test_a_restore_that_fails_half_way_drops_the_database_it_made(
    org: Organization,
    members: dict[str, Any],
    pg_db: PgSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_database: str,
) -> None:
    bigger(pg_db)
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    backup(plan)
    snapshot = restores.choose(plan).snapshot.id
    target = restore_requests.Target(database=new_database, server=restore_requests.SOURCE_SERVER)
    who = members["admin"].email
    with monkeypatch.context() as m:
        m.setenv("ONWATCH_PG_BIN_DIR", str(stopping_pg_restore(tmp_path)))
        services.request_restore(plan, repository, snapshot, target, services.Actor(who))
        [job] = jobs.run_pending(kinds=["backups.restore"])
    failed = Restore.objects.get()
    assert job.state == JobState.FAILED and failed.state == "failed"
    assert "pg_restore exited with status 1" in failed.error, failed.error
    assert f"onwatch removed the half-restored database {new_database}" in failed.error
    assert not database_exists(new_database)

    # Nothing is in the way of trying again with the same name.
    services.request_restore(plan, repository, snapshot, target, services.Actor(who))
    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert rows_in(new_database, "orders") == 5250


def test_a_sqlite_restore_onto_a_full_disk_leaves_no_half_written_file(
    org: Organization, tmp_path: Path
) -> None:
    db = big_sqlite(tmp_path / "app.sqlite3")  # about 3 MB
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    backup(plan)
    # The download fits on the 4 MiB disk; the copy made from it, beside it, does not.
    with tmpfs(tmp_path / "small", "4m") as disk:
        target = disk / "restored.sqlite3"
        with pytest.raises(targets.RestoreFailed) as failed:
            restores.restore(plan, restores.choose(plan), str(target))
        assert "full" in str(failed.value)
        assert f"onwatch removed the half-written file {target}" in str(failed.value)
        assert list(disk.iterdir()) == []


def test_a_mariadb_restore_that_fails_half_way_drops_the_database_it_made(
    org: Organization, maria_db: MariaSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_for(maria_source(org, maria_db), [local_repo(org, tmp_path / "repo")])
    backup(plan)
    name = f"bk_restored_{secrets.token_hex(4)}"
    # The real client, given the first 3 KB of the dump: a few tables, then a cut statement.
    stopping = wrapped_tools(tmp_path, "", 'head -c 3000 | "$real" "$@"')
    with monkeypatch.context() as m, pytest.raises(targets.RestoreFailed) as failed:
        m.setenv("ONWATCH_MARIADB_BIN_DIR", str(stopping))
        restores.restore(plan, restores.choose(plan), maria_db.server.url(name))
    assert "mariadb exited with status 1" in str(failed.value), failed.value
    assert f"onwatch removed the half-restored database {name}" in str(failed.value)
    shown = maria_db.execute(f"SHOW DATABASES LIKE '{name}'")
    assert shown == [], "the half-restored database was left behind"


def test_a_clean_up_that_fails_says_what_is_left_and_how_to_remove_it() -> None:
    def drop() -> None:  # a database server that has gone away meanwhile
        psycopg.connect(host="127.0.0.1", port=free_port(), connect_timeout=2)

    what = "the half-restored database shop_copy on 127.0.0.1:5432"
    how = 'drop it with the SQL DROP DATABASE "shop_copy";'
    with (
        pytest.raises(targets.RestoreFailed) as failed,
        restores.removed_on_failure(drop, what, how),
    ):
        raise targets.RestoreFailed("pg_restore exited with status 1 (out of memory)")
    said = str(failed.value)
    assert said.startswith("pg_restore exited with status 1 (out of memory); " + what)
    assert "is still there (removing it failed: " in said and "refused" in said
    assert said.endswith(how)
