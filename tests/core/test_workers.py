"""Durable jobs with real `onwatch worker` and `onwatch scheduler` processes sharing one
database (SQLite in the data dir, or the test's own PostgreSQL database)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.support.child import alerts as child_alerts
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.procs import Running, alive, free_port, isolated, run
from tests.support.receivers import WebhookReceiver, add_channels, wait_until

JOBS = 200


def test_two_workers_run_each_of_200_jobs_exactly_once(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_core.start_up, env, migrate=True)
        with Running(["worker"], env) as w1, Running(["worker"], env) as w2:
            w1.wait_for("ready")
            w2.wait_for("ready")
            # A short sleep per job keeps both workers busy at once, so they contend.
            out = call(child_core.run_short_jobs, env, JOBS)
    runs = json.loads(out)
    assert len(runs) == JOBS
    assert all(r["attempts"] == 1 for r in runs)
    # Every run appends a line naming its worker: two lines would mean two runs.
    assert all(r["log"].count("ran on ") == 1 for r in runs)
    assert all(r["result"]["worker"] == r["worker"] for r in runs)
    assert {r["result"]["pid"] for r in runs} == {w1.proc.pid, w2.proc.pid}


def test_a_freed_slot_takes_the_next_queued_job_at_once_not_a_poll_later(
    tmp_path: Path,
) -> None:
    poll = 20
    slots = {"ONWATCH_JOB_POLL_SECONDS": str(poll), "ONWATCH_QUEUE_LONG": "2"}
    with isolated(tmp_path, migrated=True, **slots) as env:
        # Queued before the worker starts, so its first look finds them.
        short = {"seconds": 0.01}
        ids = json.loads(call(child_core.enqueue, env, "core.sleep", short, 6, migrate=True))
        with Running(["worker"], env) as worker:
            worker.wait_for("ready")
            wait = 3 * poll + 30  # enough for the rounds to wait a poll each, to say so
            span = float(call(child_core.print_run_span, env, ids, wait, timeout=wait + 30))
    # Three rounds of two slots, each started as the one before ended: a round that waited
    # for the worker's next poll would alone take the whole span.
    assert span < poll, f"six jobs of 10 ms in two slots took {span:.1f} s"


def test_a_job_queued_by_another_process_starts_at_once_not_a_poll_later(
    tmp_path: Path,
) -> None:
    poll = 20
    with isolated(tmp_path, migrated=True, ONWATCH_JOB_POLL_SECONDS=str(poll)) as env:
        call(child_core.start_up, env, migrate=True)
        with Running(["worker"], env) as worker:
            worker.wait_for("ready")
            ids = []
            for _ in range(3):  # the worker idles in its poll wait each time
                time.sleep(0.5)
                ids += json.loads(call(child_core.enqueue, env, "core.sleep", {"seconds": 0}))
            waits = json.loads(call(child_core.print_queue_waits, env, ids, 3 * poll + 30))
    # Found at the worker's next poll, each would wait up to 20 s.
    assert max(waits) < 2, f"queued jobs waited {waits} s to start"


def test_a_worker_killed_mid_job_leaves_it_interrupted_and_alerted(tmp_path: Path) -> None:
    fast = {"ONWATCH_JOB_LEASE_SECONDS": "3", "ONWATCH_SCHEDULER_TICK_SECONDS": "1"}
    with isolated(tmp_path, migrated=True, **fast) as env:
        add_channels(env, {"ops": f"json://127.0.0.1:{free_port()}/"}, migrate=True)
        [job_id] = json.loads(
            call(child_core.enqueue, env, "core.sleep", {"seconds": 600}, 1, "Acme")
        )
        with Running(["worker"], env) as worker, Running(["scheduler"], env):
            call(child_core.print_log_line, env, job_id, "sleeping")
            os.kill(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
            killed = time.monotonic()
            out = call(child_core.print_once_alerted, env, job_id)
            noticed = time.monotonic() - killed
    state, error, alerted, deliveries = json.loads(out)
    assert state == "interrupted"
    assert "stopped answering" in error
    assert alerted
    assert deliveries == [[f"Background job core.sleep #{job_id} was interrupted", "ops"]]
    # A 3 s lease and a 1 s scheduler tick: noticed in seconds, well inside a minute.
    assert noticed < 60


def test_an_incident_is_notified_within_5_s_while_long_jobs_fill_every_long_slot(
    tmp_path: Path,
) -> None:
    slots = {"ONWATCH_QUEUE_LONG": "2", "ONWATCH_QUEUE_ALERTS": "1"}
    with WebhookReceiver() as receiver, isolated(tmp_path, migrated=True, **slots) as env:
        add_channels(env, {"ops": receiver.url()}, migrate=True)
        # Three hours of long work for two long slots: two run, one waits for a slot.
        long_ids = json.loads(call(child_core.enqueue, env, "core.sleep", {"seconds": 3600}, 3))
        with Running(["worker"], env) as worker:
            worker.wait_for("ready")
            call(child_core.wait_for_running, env, long_ids, 2)
            opened = call(child_alerts.open_incident, env, "Acme", "monitor:1", "Shop is down")
            due = float(opened)
            wait_until(lambda: bool(receiver.hooks), timeout=30, what="the notification")
            reached = time.time() - due
            states = call(child_core.print_states, env, long_ids)
    assert "Shop is down" in receiver.hooks[0].body.decode()
    assert reached < 5, f"the notification reached the receiver {reached:.1f} s after it was due"
    # Every long slot was still taken when the notification went out.
    assert json.loads(states) == ["running", "running", "queued"]


def test_onwatch_jobs_cancel_stops_a_running_job_and_its_processes(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        sleep = {"seconds": 600, "program": True}
        [job_id] = json.loads(call(child_core.enqueue, env, "core.sleep", sleep, migrate=True))
        with Running(["worker"], env) as worker:
            worker.wait_for("ready")
            line = call(child_core.print_log_line, env, job_id, "in process")
            child = int(line.split("in process ")[1])
            assert alive(child)
            cancelled = run(["jobs", "cancel", str(job_id)], env)
            # Timed by onwatch's own records, from the cancel the command logged to the
            # job's end: the start-up of the command and of this helper is no part of it.
            out = call(child_core.print_once_stopped, env, job_id, "cli cancelled the job")
            child_alive = alive(child)
            again = run(["jobs", "cancel", str(job_id)], env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"stopping job #{job_id} (core.sleep)" in cancelled.stdout
    state, error, log, alerted, took = json.loads(out)
    # Who cancelled, then what the handler said when its program was stopped.
    assert (state, alerted) == ("cancelled", False)
    assert error == "cancelled by cli; the sleep program ended with -15", error
    assert "cli cancelled the job; stopping it" in log and "cleaned up" in log
    assert not child_alive, "the job's sleep program outlived the cancel"
    assert took < 15
    assert again.returncode == 2
    assert f"job #{job_id} has already ended (cancelled); nothing to cancel" in again.stderr


def test_onwatch_jobs_cancel_refuses_to_silence_an_alert_unless_told_it_is_meant(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        [job_id] = json.loads(call(child_core.enqueue, env, "alerts.deliver", {}, migrate=True))
        refused = run(["jobs", "cancel", str(job_id)], env)
        [state] = json.loads(call(child_core.print_states, env, [job_id]))
        meant = run(["jobs", "cancel", "--alerts-too", str(job_id)], env)
    assert refused.returncode == 2 and state == "queued"
    [line] = refused.stderr.strip().splitlines()
    assert f"job #{job_id} sends an alert" in line and "add --alerts-too" in line
    assert meant.returncode == 0 and "cancelled; it will not run" in meant.stdout
