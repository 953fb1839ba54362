"""`onwatch audit verify` as people run it: a real process against a real database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.child import audit as child_audit
from tests.support.child import call
from tests.support.folders import unwritable
from tests.support.procs import isolated, run


def test_audit_verify_passes_an_intact_log_and_names_the_first_tampered_entry(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_audit.write_entries, env, 5, migrate=True)
        intact = run(["audit", "verify"], env)
        assert (intact.returncode, intact.stderr) == (0, "")
        assert "audit log intact (5 entries)" in intact.stdout

        # Behind onwatch's back, as someone with database access would.
        call(
            child_audit.run_sql,
            env,
            "UPDATE core_auditentry SET actor = 'mallory' WHERE seq IN (3, 4)",
        )
        tampered = run(["audit", "verify"], env)
    assert tampered.returncode == 1
    assert tampered.stderr.strip() == (
        "onwatch: audit log tampered: entry 3 was changed after it was written"
    )


def write_entries(env: dict[str, str], n: int) -> None:
    call(child_audit.write_entries, env, n, migrate=True)


def sql(env: dict[str, str], statement: str) -> None:
    call(child_audit.run_sql, env, statement)


def test_audit_verify_names_deleted_newest_entries(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        write_entries(env, 5)
        # Behind onwatch's back: the rest of the chain still links up.
        sql(env, "DELETE FROM core_auditentry WHERE seq >= 4")
        truncated = run(["audit", "verify"], env)
    assert truncated.returncode == 1
    assert truncated.stderr.strip() == (
        "onwatch: audit log tampered: entries 4 to 5 are missing from the end (onwatch wrote "
        "up to entry 5; the log now ends at entry 3): they were deleted, or the database was "
        "put back from an older copy (if on purpose, run `onwatch audit accept-restore`)"
    )


def test_accept_restore_takes_an_older_copy_of_the_database_on_purpose(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        write_entries(env, 5)
        sql(env, "DELETE FROM core_auditentry WHERE seq >= 4")
        accepted = run(["audit", "accept-restore"], env)
        assert (accepted.returncode, accepted.stderr) == (0, "")
        assert "accepted as it now is, up to entry 4" in accepted.stdout
        assert "written before was entry 5" in accepted.stdout
        intact = run(["audit", "verify"], env)
        # Still guarded afterwards: the head file names the acceptance entry.
        sql(env, "DELETE FROM core_auditentry WHERE seq = 4")
        truncated = run(["audit", "verify"], env)
    assert (intact.returncode, intact.stderr) == (0, "")
    assert "audit log intact (4 entries)" in intact.stdout
    assert truncated.returncode == 1
    assert "entry 4 is missing from the end" in truncated.stderr


def test_audit_verify_names_a_chain_rewritten_by_a_database_writer(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        write_entries(env, 3)
        # Everything a database writer can do: change the actors and recompute every hash
        # the way an unkeyed chain computes them.
        call(child_audit.rewrite_chain, env, "mallory")
        rewritten = run(["audit", "verify"], env)
    assert rewritten.returncode == 1
    assert rewritten.stderr.strip() == (
        "onwatch: audit log tampered: entry 1 was changed after it was written"
    )


def test_a_log_passed_off_as_from_before_the_key_is_caught_without_the_head_file(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        write_entries(env, 3)
        # Rewritten as old unkeyed entries, on a machine with no head file (as every
        # PostgreSQL client that never wrote an entry is).
        call(child_audit.pass_off_as_unkeyed, env, "mallory")
        (tmp_path / "data" / "audit-head.json").unlink()
        rewritten = run(["audit", "verify"], env)
        # `onwatch migrate` (and `up`) must not seal the forgery with the real key.
        migrated = run(["migrate"], env)
        after = run(["audit", "verify"], env)
    assert rewritten.returncode == 1
    assert rewritten.stderr.strip() == (
        "onwatch: audit log tampered: entry 1 was changed after it was written"
    )
    assert (migrated.returncode, migrated.stderr) == (0, "")
    assert "key seals" not in migrated.stdout
    assert (after.returncode, after.stderr) == (rewritten.returncode, rewritten.stderr)


def test_a_log_without_its_head_file_cannot_be_fully_checked(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        write_entries(env, 2)
        (tmp_path / "data" / "audit-head.json").unlink()
        unchecked = run(["audit", "verify"], env)
    assert unchecked.returncode == 1
    assert unchecked.stderr.startswith("onwatch: audit log cannot be fully checked: the head file")


def test_an_existing_unkeyed_log_is_sealed_by_migrate_and_then_guarded(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        # An install from before the key: its tables as they were, three unkeyed entries.
        call(child_audit.install_unkeyed_log, env, migrate=True)
        key_file = tmp_path / "data" / "keyring.json"
        assert json.loads(key_file.read_text())["audit_keyed"] is False
        migrated = run(["migrate"], env)
        assert json.loads(key_file.read_text())["audit_keyed"] is True
        assert (migrated.returncode, migrated.stderr) == (0, "")
        intact = run(["audit", "verify"], env)
        assert (intact.returncode, intact.stderr) == (0, "")
        assert "audit log intact (3 entries)" in intact.stdout

        sql(env, "DELETE FROM core_auditentry WHERE seq = 3")
        truncated = run(["audit", "verify"], env)
    assert truncated.returncode == 1
    assert "entry 3 is missing from the end" in truncated.stderr


def test_a_key_file_that_cannot_take_the_keyed_note_warns_and_is_never_called_intact(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    with isolated(tmp_path, migrated=True, ONWATCH_KEY_FILE=str(keys / "keyring.json")) as env:
        write_entries(env, 2)
        # A key file from the release before the note, on a folder onwatch cannot write.
        call(child_audit.unmark_keyed_log, env)
        with unwritable(keys):
            started = run(["migrate"], env)
            unchecked = run(["audit", "verify"], env)
            accepting = run(["audit", "accept-restore"], env)
        migrated = run(["migrate"], env)
        intact = run(["audit", "verify"], env)
    # onwatch starts, and says once what is wrong and what to do.
    assert started.returncode == 0 and "database is up to date" in started.stdout
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    warning = lines[0]
    said = (
        f"the key file {keys / 'keyring.json'} could not be marked as sealing the audit log, "
        f"because its folder {keys} does not let onwatch write there"
    )
    assert warning.startswith(f"onwatch: warning: the audit log cannot be fully checked: {said}")
    assert warning.endswith(f"Fix: let onwatch write to {keys}, then run `onwatch migrate` once")
    assert unchecked.returncode == 1 and "intact" not in unchecked.stdout + unchecked.stderr
    assert unchecked.stderr.startswith(f"onwatch: audit log cannot be fully checked: {said}")
    assert accepting.returncode == 2 and "intact" not in accepting.stdout + accepting.stderr
    assert (migrated.returncode, migrated.stderr) == (0, "")
    assert json.loads((keys / "keyring.json").read_text())["audit_keyed"] is True
    assert (intact.returncode, intact.stderr) == (0, "")
    assert "audit log intact (3 entries)" in intact.stdout


def test_an_unwritable_head_file_folder_stops_onwatch_with_one_line(tmp_path: Path) -> None:
    with isolated(tmp_path, ONWATCH_AUDIT_HEAD_FILE="/proc/onwatch/audit-head.json") as env:
        refused = run(["migrate"], env)
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "onwatch: The audit head file's folder /proc/onwatch is not writable"
    )
    assert refused.stderr.strip().endswith(
        "set ONWATCH_AUDIT_HEAD_FILE to a folder you can write, or fix its permissions"
    )
