"""A pipeline whose worker dies mid-step (SIGKILL, real worker and scheduler processes)
ends interrupted, alerted once, with its workspace removed by whoever noticed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.deploys import commit
from tests.support.procs import Running, free_port, isolated, run
from tests.support.receivers import add_channels, wait_until
from tests.support.steps import marker, processes_with

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_a_pipeline_whose_worker_is_killed_ends_interrupted_and_alerts_once(
    tmp_path: Path,
) -> None:
    word = marker()
    slow = f'[test]\ncommand = "touch started; exec -a {word} sleep 600"\n'
    commit(tmp_path / "repo", {"onwatch.toml": slow}, "Slow")
    fast = {"ONWATCH_JOB_LEASE_SECONDS": "3", "ONWATCH_SCHEDULER_TICK_SECONDS": "1"}
    try:
        with isolated(tmp_path, migrated=True, **fast) as env:
            add_channels(env, {"ops": f"json://127.0.0.1:{free_port()}/"}, migrate=True)
            assert run(["services", "add", "shop", str(tmp_path / "repo")], env).returncode == 0
            with Running(["worker"], env) as worker:
                worker.wait_for("ready")
                assert run(["pipelines", "run", "shop"], env).returncode == 0
                work = Path(env["ONWATCH_WORK_DIR"]) / "workspaces"
                wait_until(lambda: any(work.glob("*/*/started")), 60)
                os.kill(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait()
            with Running(["scheduler"], env):
                out = call(child_deploys.print_once_interrupted, env, "shop")
            # Beside the workspaces: the service's caches, which stay.
            workspaces = [p for p in work.glob("*/*") if p.name != "caches"]
            left = processes_with(word)
    finally:
        # Should --die-with-parent ever fail: do not leave the step's sleep behind.
        for pid in processes_with(word):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert left == [], "the step outlived its worker"
    state, reason, steps, titles = json.loads(out)
    assert state == "interrupted"
    assert reason.startswith("onwatch stopped while the pipeline ran")
    assert steps[-1] == ["test", "interrupted"]
    assert [t for t in titles if "Pipeline" in t] == [
        "Pipeline #1 of shop (main) was interrupted at test"
    ]
    assert len(titles) == 1, titles  # the job's own alert would say it twice
    assert workspaces == []
