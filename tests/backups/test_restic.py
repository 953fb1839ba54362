"""onwatch/backups/restic.py against the real restic: typed results, typed errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from onwatch.backups import restic
from tests.support.backups import RestServer, backup_text, corrupt_packs, hold_lock
from tests.support.flaky_rest import FlakyDeletes
from tests.support.procs import argv_of, free_port

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def new_repo(tmp_path: Path, password: str = "s3cret-pass") -> restic.Repo:  # noqa: S107
    repo = restic.Repo(str(tmp_path / "repo"), password, tmp_path / "cache")
    restic.init(repo)
    return repo


def test_it_reads_the_installed_version_and_parses_others() -> None:
    assert restic.version() >= (0, 9, 0)
    assert restic.parse_version("restic 0.17.3 compiled with go1.23") == (0, 17, 3)
    with pytest.raises(restic.ResticFailed):
        restic.parse_version("something else")


def test_it_redacts_passwords_in_repository_urls() -> None:
    assert restic.redact("rest:https://u:pw@host:8000/r/") == "rest:https://u:***@host:8000/r/"
    assert restic.redact("/var/backups/repo") == "/var/backups/repo"
    assert restic.redact("sftp:me@host:/srv/repo") == "sftp:me@host:/srv/repo"


def test_a_backup_summary_and_snapshots_come_back_typed(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    summary = backup_text(repo, b"hello world\n" * 100, ["onwatch", "plan:1"])
    assert summary.bytes_processed == 1200 and summary.files == 1
    [snap] = restic.snapshots(repo, ["plan:1"])
    assert snap.id.startswith(summary.snapshot_id) and snap.paths == ["/x.txt"]
    assert snap.tag_value("plan") == "1"
    assert restic.snapshots(repo, ["plan:2"]) == []


def test_the_password_travels_in_the_environment_not_argv(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, password="never-in-argv")
    r, w = os.pipe()
    running = restic.start_backup_stdin(repo, "x", [], stdin=r)
    os.close(r)
    cmdline = argv_of(running.proc.pid, "restic")
    os.write(w, b"data")
    os.close(w)
    restic.finish_backup(running)
    assert "backup" in cmdline
    assert "never-in-argv" not in cmdline and str(repo.url) not in cmdline


def test_a_wrong_password_is_a_typed_error_with_a_human_message(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    with pytest.raises(restic.WrongPassword, match="password is wrong"):
        restic.snapshots(restic.Repo(repo.url, "not-it", repo.cache_dir))


def test_an_unreachable_rest_repository_is_a_typed_error(tmp_path: Path) -> None:
    url = f"rest:http://u:hidden@127.0.0.1:{free_port()}/"
    with pytest.raises(restic.RepositoryUnreachable) as e:
        restic.snapshots(restic.Repo(url, "pw"))
    assert "cannot be reached" in str(e.value) and "hidden" not in str(e.value)


def test_a_rest_repository_served_by_rclone_works(tmp_path: Path) -> None:
    with RestServer(tmp_path / "rest") as server:
        repo = restic.Repo(server.url, "pw", tmp_path / "cache")
        restic.init(repo)
        summary = backup_text(repo, b"over http", ["t"])
        assert [s.id[:8] for s in restic.snapshots(repo)] == [summary.snapshot_id[:8]]


def test_forget_policy_keeps_the_newest_and_forget_removes_one(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    first = backup_text(repo, b"one", ["plan:1"])
    second = backup_text(repo, b"two", ["plan:1"])
    removed = restic.forget_policy(repo, ["plan:1"], restic.Retention(0, 0, 0))
    [left] = restic.snapshots(repo)
    assert left.id.startswith(second.snapshot_id)
    assert [r[:8] for r in removed] == [first.snapshot_id[:8]]
    restic.forget(repo, [left.id])
    assert restic.snapshots(repo) == []


def data_bytes(repo: restic.Repo) -> int:
    return sum(p.stat().st_size for p in (Path(repo.url) / "data").rglob("*") if p.is_file())


def test_forget_keeps_the_data_and_prune_frees_it(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    backup_text(repo, os.urandom(2 << 20), ["plan:1"])
    backup_text(repo, os.urandom(1 << 20), ["plan:1"])
    before = data_bytes(repo)
    restic.forget_policy(repo, ["plan:1"], restic.Retention(0, 0, 0))
    assert data_bytes(repo) == before, "forget alone must stay quick: no data rewritten"
    summary = restic.prune(repo)
    assert summary.freed.endswith("MiB") and float(summary.freed.split()[0]) > 1.9
    assert data_bytes(repo) < before - (2 << 20)
    # Nothing left to free: prune says so.
    assert restic.prune(repo).freed == "0 B"


def test_unlock_removes_a_dead_process_lock_but_not_a_live_one(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    backup_text(repo, b"x", ["plan:1"])
    live = hold_lock(repo)
    try:
        restic.unlock(repo)
        assert len(restic.locks(repo)) == 1
        with pytest.raises(restic.RepositoryLocked, match="locked by another restic"):
            restic.forget_policy(repo, ["plan:1"], restic.Retention(1, 0, 0))
    finally:
        live.kill()
        live.wait()
    # Killed: its lock is stale now, and unlock clears it.
    assert len(restic.locks(repo)) == 1
    restic.unlock(repo)
    assert restic.locks(repo) == []
    restic.forget_policy(repo, ["plan:1"], restic.Retention(1, 0, 0))


def test_a_corrupted_pack_fails_check_as_damage(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    backup_text(repo, os.urandom(100_000), [])
    restic.check(repo, read_data_subset="100%")
    assert corrupt_packs(tmp_path / "repo") >= 1
    with pytest.raises(restic.RepositoryDamaged, match="is damaged"):
        restic.check(repo, read_data_subset="100%")


def test_classify_uses_the_text_of_older_restic_and_codes_of_newer() -> None:
    old = restic.classify("Fatal: wrong password or no key found\n", 1, "/r", (0, 14, 0))
    assert isinstance(old, restic.WrongPassword)
    new = restic.classify("Fatal: something new\n", 11, "/r", (0, 17, 0))
    assert isinstance(new, restic.RepositoryLocked)
    other = restic.classify("Fatal: disk on fire\n", 1, "/r", (0, 14, 0))
    assert isinstance(other, restic.ResticFailed) and "disk on fire" in str(other)


def test_a_refused_forget_stops_restic_at_once_and_leaves_no_lock(tmp_path: Path) -> None:
    with RestServer(tmp_path / "rest", append_only=True) as server:
        repo = restic.Repo(server.url, "pw", tmp_path / "cache")
        restic.init(repo)
        saved = backup_text(repo, b"kept", ["plan:1"])
        started = time.monotonic()
        with pytest.raises(restic.DeletesRefused, match="append-only"):
            restic.forget(repo, [saved.snapshot_id])
        took = time.monotonic() - started
        assert restic.locks(repo) == []
        assert len(restic.snapshots(repo)) == 1
    # restic alone retries a refused delete for some 45 s.
    assert took < 10, f"{took:.1f} s"


def test_a_delete_that_fails_for_a_while_keeps_restics_retries(tmp_path: Path) -> None:
    """Only a refusal ends restic early: an error that may pass is retried as restic does."""
    with (
        RestServer(tmp_path / "rest") as server,
        FlakyDeletes(server.port, failures=2, status=500) as flaky,
    ):
        repo = restic.Repo(flaky.url, "pw", tmp_path / "cache")
        restic.init(repo)
        first = backup_text(repo, b"one", ["plan:1"])
        backup_text(repo, b"two", ["plan:1"])
        removed = restic.forget_policy(repo, ["plan:1"], restic.Retention(0, 0, 0))
        assert [r[:8] for r in removed] == [first.snapshot_id[:8]]
        assert len(restic.snapshots(repo)) == 1
    assert flaky.deletes == 3  # two failed, the third passed
