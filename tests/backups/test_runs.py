"""Backup runs and restore drills end to end, as durable jobs: real PostgreSQL, SQLite,
directories, restic, and a REST repository through rclone."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from onwatch.backups import restic, runs, services
from onwatch.backups.models import Outcome, RunCopy, SourceKind
from onwatch.core import jobs, postgres
from onwatch.core.models import Job, JobState, Organization
from tests.support.backups import (
    PgSource,
    RestServer,
    assert_failed_with_alert,
    backup,
    channel,
    corrupt_packs,
    directory,
    drill,
    hold_lock,
    killing_pg_dump,
    local_repo,
    own_scratch_database,
    pg_db,
    pg_source,
    plan_for,
    rest_server,
    scratch_databases,
    sqlite_file,
)
from tests.support.fixtures import make_member, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("channel")]
__all__ = ["channel", "pg_db", "rest_server"]


# --- happy paths ----------------------------------------------------------------------------


def test_a_postgresql_plan_backs_up_and_its_drill_proves_it(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    source = pg_source(
        org,
        pg_db,
        smoke_queries=[
            {"sql": "SELECT name FROM customers ORDER BY id", "expect": [["ada"], ["bob"], ["cy"]]},
        ],
    )
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert run.state == Outcome.SUCCEEDED and run.seconds and run.bytes_processed > 0
    assert run.contents["tables"] == {"public.customers": 3, "public.orders": 250}
    [copy] = run.copies.all()
    assert copy.good and len(copy.snapshot_id) >= 8
    [snap] = restic.snapshots(services.repo_of(copy.repository), [plan.tag])
    assert snap.id.startswith(copy.snapshot_id) and f"run:{run.pk}" in snap.tags

    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert d.verified and d.state == Outcome.SUCCEEDED and snap.id.startswith(d.snapshot_id)
    assert {c["check"] for c in d.checks} >= {"rows in public.customers", "rows in public.orders"}
    assert any(c["check"].startswith("smoke query") and c["ok"] for c in d.checks)
    assert d.fetch_seconds and d.restore_seconds and d.verify_seconds is not None
    assert d.rto_seconds == pytest.approx(d.fetch_seconds + d.restore_seconds + d.verify_seconds)
    assert d.rto_met
    assert own_scratch_database(job) not in scratch_databases(), "its scratch database was left"


def test_a_sqlite_file_is_copied_online_and_checked_with_integrity_check(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    assert run.contents["tables"] == {"notes": 40, "tags": 2}
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    assert {"check": "PRAGMA integrity_check", "ok": True, "detail": "ok"} in d.checks


def test_a_directory_is_backed_up_and_its_sampled_hashes_verified(
    org: Organization, tmp_path: Path
) -> None:
    root = directory(tmp_path / "uploads")
    source = services.add_source(org, "uploads", SourceKind.DIRECTORY, path=str(root))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    assert run.contents["files"] == 13 and len(run.contents["sample"]) == 13
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    assert sum(c["check"].startswith("sha256") for c in d.checks) == 13


def test_two_copies_get_the_same_dump_and_the_drill_uses_the_offsite_rest_one(
    org: Organization, pg_db: PgSource, tmp_path: Path, rest_server: RestServer
) -> None:
    local = local_repo(org, tmp_path / "repo", provider="hetzner")
    offsite = services.add_repository(org, "offsite", rest_server.url, provider="ovh")
    plan = plan_for(pg_source(org, pg_db), [local, offsite], drill_from=offsite)
    # Both sit on this machine in the test, so the plan is rightly flagged.
    assert services.not_offsite(plan)
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    copies = {c.repository.name: c for c in run.copies.all()}
    assert copies["local"].good and copies["offsite"].good
    assert copies["local"].snapshot_id != copies["offsite"].snapshot_id
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    assert d.repository == offsite
    assert d.snapshot_id.startswith(copies["offsite"].snapshot_id)


def test_a_plan_whose_copies_sit_with_the_source_is_not_offsite(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    source = pg_source(org, pg_db)  # provider hetzner, on this machine
    same_provider = services.add_repository(
        org, "sftp", "sftp:me@backup.example:/r", provider="Hetzner", initialise=False
    )
    same_host = local_repo(org, tmp_path / "repo", provider="ovh")
    assert services.not_offsite(plan_for(source, [same_provider, same_host]))
    elsewhere = services.add_repository(
        org, "b2", "b2:bucket:path", provider="backblaze", initialise=False
    )
    assert not services.not_offsite(services.add_plan(source, "other", [same_host, elsewhere]))


# --- faults: each one a failed run or drill, plus an alert -----------------------------------


def test_a_dump_killed_mid_stream_leaves_no_snapshot_that_looks_good(
    org: Organization, pg_db: PgSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_db.connect() as c:  # enough data that 4 KiB is a fraction of the dump
        c.execute(
            "INSERT INTO orders (customer, total) SELECT 1, g FROM generate_series(1, 5000) g"
        )
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    monkeypatch.setenv("ONWATCH_PG_BIN_DIR", str(killing_pg_dump(tmp_path)))
    job, run = backup(plan)
    assert_failed_with_alert(job, "pg_dump was killed by signal 9")
    [copy] = run.copies.all()
    assert not copy.good and copy.removed and copy.snapshot_id
    assert restic.snapshots(services.repo_of(repository)) == []
    job, _ = drill(plan)
    assert_failed_with_alert(job, "holds no good backup")


def test_a_wrong_repository_password_fails_the_run(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    repository.password = "not-the-password"
    repository.save()
    job, _ = backup(plan_for(pg_source(org, pg_db), [repository]))
    assert_failed_with_alert(job, "password is wrong")
    assert not RunCopy.objects.filter(good=True).exists()


def test_an_unreachable_offsite_copy_fails_the_run_but_keeps_the_local_copy(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    local = local_repo(org, tmp_path / "repo")
    with RestServer(tmp_path / "rest") as server:
        offsite = services.add_repository(org, "offsite", server.url, provider="ovh")
    plan = plan_for(pg_source(org, pg_db), [local, offsite])  # the server is gone now
    job, run = backup(plan)
    assert_failed_with_alert(job, "offsite: rest:http://127.0.0.1")
    assert "cannot be reached" in job.error
    copies = {c.repository.name: c for c in run.copies.all()}
    assert copies["local"].good and not copies["offsite"].good


def test_a_stale_lock_of_a_crashed_backup_is_cleared_by_the_prune_that_follows(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    crashed = hold_lock(services.repo_of(repository))
    crashed.kill()
    crashed.wait()
    job, _ = backup(plan)
    # A backup's lock is shared: a dead one does not stand in the way of the next backup.
    assert job.state == JobState.SUCCEEDED, job.error
    assert "forgotten by job #" in job.log
    [pruning] = jobs.run_pending(kinds=["backups.prune"])
    assert pruning.state == JobState.SUCCEEDED, pruning.error
    assert "removed 1 stale lock(s)" in pruning.log
    assert restic.locks(services.repo_of(repository)) == []


def test_a_stale_exclusive_lock_is_cleared_and_the_backup_made_again(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(source, [repository])
    crashed_exclusive_lock(services.repo_of(repository), tmp_path / "repo")
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.log
    assert "removed 1 stale lock(s)" in job.log
    [copy] = run.copies.all()
    assert copy.good
    snaps = restic.snapshots(services.repo_of(repository), [plan.tag])
    assert [s.id for s in snaps if s.id.startswith(copy.snapshot_id)]
    assert len(snaps) == 1  # the locked attempt left nothing behind


def crashed_exclusive_lock(repo: restic.Repo, path: Path) -> None:
    """A real restic holding the exclusive lock (`check` takes one), killed while it does:
    its lock file stays, and restic refuses backups until it is removed."""
    for _ in range(20):
        proc = subprocess.Popen(
            [restic.binary(), "check", "--read-data"],
            env=restic.restic_env(repo),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and not written(path / "locks"):
            time.sleep(0.002)
        proc.kill()
        proc.wait()
        # restic 0.14 passes over a lock file it cannot read (one killed mid-write).
        if exclusive_locks(repo, path / "locks"):
            return
    raise AssertionError("restic check never held its lock long enough to be killed")


def written(locks: Path) -> bool:
    # restic writes "<id>-tmp-…" first and renames it to "<id>" once written.
    return any("-" not in f.name and f.stat().st_size > 0 for f in locks.iterdir())


def exclusive_locks(repo: restic.Repo, locks: Path) -> int:
    found = 0
    for f in locks.iterdir():
        if "-" in f.name:
            continue
        shown = subprocess.run(
            [restic.binary(), "cat", "lock", f.name, "--no-lock"],
            env=restic.restic_env(repo),
            capture_output=True,
            text=True,
        ).stdout
        found += bool(shown.strip()) and json.loads(shown).get("exclusive") is True
    return found


def test_a_lock_held_by_a_live_restic_fails_the_prune_but_not_the_backup(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(pg_source(org, pg_db), [repository])
    live = hold_lock(services.repo_of(repository))
    try:
        job, run = backup(plan)
        [pruning] = jobs.run_pending(kinds=["backups.prune"])
    finally:
        live.kill()
        live.wait()
    assert job.state == JobState.SUCCEEDED, job.error
    [copy] = run.copies.all()
    assert copy.good  # the snapshot itself is fine; only pruning could not run
    assert_failed_with_alert(pruning, "retention failed")
    assert "locked by another restic" in pruning.error


def test_the_prune_after_a_backup_keeps_what_the_plan_says(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(source, [repository], keep_daily=0, keep_weekly=0, keep_monthly=0)
    for _ in range(3):
        assert backup(plan)[0].state == JobState.SUCCEEDED
    prunes = jobs.run_pending(kinds=["backups.prune"])
    assert [p.state for p in prunes] == [JobState.SUCCEEDED] * 3
    # Keep nothing by day, week or month: still the newest one, always.
    [left] = restic.snapshots(services.repo_of(repository), [plan.tag])
    newest = RunCopy.objects.filter(repository=repository).latest("finished_at")
    assert left.id.startswith(newest.snapshot_id)


def test_a_corrupted_pack_fails_the_drill(org: Organization, tmp_path: Path) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    assert backup(plan)[0].state == JobState.SUCCEEDED
    assert corrupt_packs(tmp_path / "repo") >= 1
    job, d = drill(plan)
    assert_failed_with_alert(job, "is damaged")
    assert not d.verified


def test_a_restored_database_missing_a_table_fails_the_drill(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    plan = plan_for(pg_source(org, pg_db), [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED
    # The run recorded a table the snapshot does not hold: the restore comes back short.
    run.contents["tables"]["public.invoices"] = 12
    run.save()
    job, d = drill(plan)
    assert_failed_with_alert(job, "rows in public.invoices: missing from the restored copy")
    assert not d.verified
    assert [c["check"] for c in d.checks if not c["ok"]] == ["rows in public.invoices"]


def test_a_drill_over_its_rto_target_fails_but_counts_as_verified(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")], rto_minutes=0)
    backup(plan)
    job, d = drill(plan)
    assert_failed_with_alert(job, "over the RTO target of 0 min")
    assert d.verified and d.rto_met is False


def test_the_dump_of_a_missing_database_fails_the_run(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    source = pg_source(org, pg_db)
    source.database = "no_such_database_here"
    source.save()
    job, _ = backup(plan_for(source, [local_repo(org, tmp_path / "repo")]))
    assert_failed_with_alert(job, "no_such_database_here")
    assert not RunCopy.objects.filter(good=True).exists()


def test_restic_never_sees_the_source_password_in_argv(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    # Guard for the tools too: pg_dump's argv has no password (it goes through PGPASSWORD).
    from onwatch.backups import pg

    source = pg_source(org, pg_db, password="pg-secret-pw")
    cmd = postgres.dump_command(pg.source_server(source), "00000003-1")
    assert not any("pg-secret-pw" in a for a in cmd)
    assert pg.source_server(source).tool_env()["PGPASSWORD"] == "pg-secret-pw"
    assert subprocess.run([cmd[0], "--version"], capture_output=True).returncode == 0


def test_an_older_pg_dump_than_the_server_is_explained_before_dumping() -> None:

    assert postgres.tool_major("pg_dump") >= 10
    problem = postgres.version_problem(client=15, server=16)
    assert problem is not None and "install the PostgreSQL 16 client tools" in problem
    assert postgres.version_problem(client=16, server=15) is None


def test_smoke_queries_only_read(org: Organization, pg_db: PgSource, tmp_path: Path) -> None:
    writes = "with gone as (delete from orders returning 1) select count(*) from gone"
    source = pg_source(
        org,
        pg_db,
        smoke_queries=[
            {"sql": writes, "expect": [[0]]},
            {"sql": "drop table orders", "expect": []},
            {"sql": "select count(*) from orders", "expect": [[250]]},
        ],
    )
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    assert backup(plan)[0].state == JobState.SUCCEEDED
    job, d = drill(plan)
    assert_failed_with_alert(job, "smoke query")
    by_sql = {c["check"]: c for c in d.checks}
    assert "read-only transaction" in by_sql[f"smoke query {writes!r}"]["detail"]
    assert by_sql["smoke query 'drop table orders'"]["detail"] == (
        "not run: a smoke query is one SELECT statement"
    )
    # The read that came after still saw every row: nothing was deleted.
    assert by_sql["smoke query 'select count(*) from orders'"]["ok"]


def test_the_weekly_reclaim_frees_each_repository_and_a_failing_one_alerts_alone(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_file(tmp_path / "app.sqlite3")
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    good = local_repo(org, tmp_path / "good", name="good")
    bad = local_repo(org, tmp_path / "bad", name="bad")
    plan = plan_for(source, [good, bad], keep_daily=0, keep_weekly=0, keep_monthly=0)
    for _ in range(2):
        assert backup(plan)[0].state == JobState.SUCCEEDED
    assert all(p.state == JobState.SUCCEEDED for p in jobs.run_pending(kinds=["backups.prune"]))
    bad.password = "not-the-password"
    bad.save()

    [weekly] = run_job_now("backups.reclaim_all", org)
    assert weekly.state == JobState.SUCCEEDED, weekly.error
    reclaims = {j.payload["repository"]: j for j in jobs.run_pending(kinds=["backups.reclaim"])}
    assert reclaims[good.pk].state == JobState.SUCCEEDED, reclaims[good.pk].error
    assert "good: freed " in reclaims[good.pk].log
    assert_failed_with_alert(reclaims[bad.pk], "Freeing space in bad failed")
    assert "password" in reclaims[bad.pk].error
    # Each repository's page shows its latest reclaim: the evidence, or why it failed.
    viewer = signed_in(make_member(org, "viewer"))
    page = viewer.get(f"/backups/repositories/{good.pk}/").content.decode()
    assert f"{reclaims[good.pk].result['freed']}, " in page and " in use" in page
    page = viewer.get(f"/backups/repositories/{bad.pk}/").content.decode()
    assert "failed</span>" in page and "Freeing space in bad failed" in page


def run_job_now(kind: str, org: Organization) -> list[Job]:
    jobs.enqueue(kind, {}, org=None)
    return jobs.run_pending(kinds=[kind])


def test_the_reclaim_waits_for_a_backup_holding_the_repository_then_frees_it(
    org: Organization, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    live = hold_lock(services.repo_of(repository))

    def backup_ends() -> None:
        live.kill()
        live.wait()  # reaped: a zombie's lock would still look alive

    threading.Timer(6.0, backup_ends).start()
    lines: list[str] = []
    try:
        summary = runs.reclaim(repository, lines.append, lock_wait=30, poll=0.5)
    finally:
        live.kill()
        live.wait()
    assert summary.freed == "0 B"  # nothing forgotten yet: nothing to free
    assert any("in use by another restic; trying again" in line for line in lines), lines
    assert any("freed 0 B" in line for line in lines), lines


def test_the_reclaim_gives_up_on_a_repository_held_too_long(
    org: Organization, tmp_path: Path
) -> None:
    repository = local_repo(org, tmp_path / "repo")
    live = hold_lock(services.repo_of(repository))
    try:
        with pytest.raises(runs.ReclaimFailed, match="locked by another restic"):
            runs.reclaim(repository, lambda line: None, lock_wait=1, poll=0.5)
    finally:
        live.kill()
        live.wait()
