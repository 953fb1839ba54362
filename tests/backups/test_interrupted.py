"""A backup or a restore drill whose worker died mid-run ends interrupted, not "running"
for ever: one alert (the job's), a Backups page that says the last backup did not finish,
no snapshot of it offered to restores, and a proof that an interrupted drill neither
takes back nor confirms (real worker and scheduler processes, real restic; the worker is
killed with SIGKILL while restic runs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

from tests.support.backups import sqlite_file
from tests.support.child import call
from tests.support.child import reap as child
from tests.support.procs import Running, free_port, isolated
from tests.support.receivers import wait_until

FAST = {"ONWATCH_JOB_LEASE_SECONDS": "3", "ONWATCH_SCHEDULER_TICK_SECONDS": "1"}


def restic_that_hangs(tmp_path: Path, when: str) -> Path:
    """restic, except that the commands `when` matches (a shell case pattern on its
    arguments) write their pid to a file and then wait ten minutes: still running when
    the worker is killed. A backup runs for real first, so its snapshot is there."""
    real = shutil.which("restic")
    assert real, "restic is not installed"
    script = tmp_path / "restic-hangs"
    script.write_text(
        "#!/bin/sh\n"
        f'case " $* " in {when}) "{real}" "$@"; echo $$ > "$0.pid"; exec sleep 600;; esac\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def kill_worker_mid_job(env: dict[str, str], restic: Path, kind: str, plan_id: int) -> int:
    """Start the job on a worker whose restic hangs, SIGKILL the worker once restic hangs,
    and let a scheduler reap the job; its id."""
    job_id = int(call(child.enqueue_for_plan, env, kind, plan_id))
    pid_file = Path(f"{restic}.pid")
    with Running(["worker"], {**env, "ONWATCH_RESTIC": str(restic)}) as worker:
        wait_until(pid_file.exists, timeout=90)
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
    return job_id


def reaped(env: dict[str, str], job_id: int) -> tuple[str, str, list[str]]:
    with Running(["scheduler"], env):
        state, error, titles = json.loads(call(child.ended_with_alerts, env, job_id))
    return state, error, titles


def test_a_backup_whose_worker_died_ends_interrupted_and_is_never_restored(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True, **FAST) as env:
        db = str(sqlite_file(tmp_path / "app.sqlite3"))
        plan_id = int(call(child.backed_up_plan, env, free_port(), db, str(tmp_path / "repo"),
                           migrate=True))  # fmt: skip
        hangs = restic_that_hangs(tmp_path, '*" backup "*')
        job_id = kill_worker_mid_job(env, hangs, "backups.run", plan_id)
        state, error, titles = reaped(env, job_id)
        seen = json.loads(call(child.plan_state, env, plan_id))
    assert state == "interrupted", error
    # One alert, the job's: the run's own record does not add a second.
    assert titles == ["Backup of nightly was interrupted"]
    [cut, good] = seen["runs"]
    assert cut[1] == "interrupted", cut
    assert "stopped answering" in cut[2] and "nothing it made is used for restores" in cut[2]
    assert "last backup did not finish" in seen["problems"]
    # Its restic finished the snapshot after the worker died: tagged like a good backup,
    # and still never offered.
    assert seen["offered"] == [good[0]]


def test_a_drill_whose_worker_died_ends_interrupted_and_leaves_the_proof_alone(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True, **FAST) as env:
        db = str(sqlite_file(tmp_path / "app.sqlite3"))
        plan_id = int(call(child.backed_up_plan, env, free_port(), db, str(tmp_path / "repo"),
                           migrate=True))  # fmt: skip
        before = json.loads(call(child.plan_state, env, plan_id))
        hangs = restic_that_hangs(tmp_path, '*" restore "*|*" dump "*')
        job_id = kill_worker_mid_job(env, hangs, "backups.drill", plan_id)
        state, error, titles = reaped(env, job_id)
        seen = json.loads(call(child.plan_state, env, plan_id))
    assert state == "interrupted", error
    assert titles == ["Restore drill of nightly was interrupted"]
    [cut, proof] = seen["drills"]
    assert cut[1] == "interrupted", cut
    assert "proved nothing either way" in cut[2]
    # Neither a proof taken back nor a backup marked broken: it proved nothing.
    assert seen["proven"] == proof[0] == before["proven"]
    assert seen["last_drill"] == proof[0]
    assert seen["offered"] == before["offered"] != []
    assert seen["problems"] == before["problems"]
    assert not {"not proven restorable", "last restore drill failed"} & set(seen["problems"])
