"""A job whose worker died while a cancel was on its way: its clean-up may not have run,
so it ends interrupted and alerted, never quietly cancelled (real worker and scheduler
processes; the worker is killed with SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.support.child import call
from tests.support.child import reap as child
from tests.support.procs import Running, free_port, isolated, run


def test_a_job_cancelled_after_its_worker_died_ends_interrupted_and_alerts(
    tmp_path: Path,
) -> None:
    fast = {"ONWATCH_JOB_LEASE_SECONDS": "3", "ONWATCH_SCHEDULER_TICK_SECONDS": "1"}
    with isolated(tmp_path, migrated=True, **fast) as env:
        job_id = int(call(child.sleeping_job, env, free_port(), migrate=True))
        with Running(["worker"], env) as worker:
            call(child.wait_running, env, job_id)
            os.kill(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
        # Its worker is gone, so nobody stops its processes or runs its clean-up.
        asked = run(["jobs", "cancel", str(job_id)], env)
        assert asked.returncode == 0, asked.stderr
        with Running(["scheduler"], env):
            out = call(child.ended, env, job_id)
    state, error, alerted, titles = json.loads(out)
    assert state == "interrupted" and alerted, error
    assert error.startswith("cancelled by cli, but the worker "), error
    assert "its clean-up may not have run" in error
    assert titles == [f"Background job core.sleep #{job_id} was interrupted"]
