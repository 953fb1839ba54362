"""Pipelines against real git repositories: a tiny Python project whose test passes or
fails, checked out at the exact commit into a fresh workspace and tested by a real
process, with the states, steps, exit codes, alerts and log people read."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import html
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from onwatch.alerts.models import Delivery
from onwatch.core import jobs, loops, ssh
from onwatch.core.audit import SYSTEM
from onwatch.core.masking import forms
from onwatch.core.models import AuditEntry, Job, JobLogLine, JobState, Organization
from onwatch.core.services import issue_token
from onwatch.deploys import git as git_wrapper
from onwatch.deploys import phases, pipelines, projectfile, sandbox, services, workdir
from onwatch.deploys.api import pipeline_out
from onwatch.deploys.cli import follow
from onwatch.deploys.models import Pipeline, Service, State
from onwatch.deploys.workdir import caches_of, work_folder, workspace_of
from tests.support import leaky_step
from tests.support.backups import alerts_titled
from tests.support.deploys import (
    PYTESTS,
    TOML,
    beside_a_writer,
    commit,
    git,
    node_project,
    project,
    service_for,
    uv_project,
)
from tests.support.fixtures import make_member, signed_in
from tests.support.receivers import wait_until
from tests.support.releases import run_in_thread
from tests.support.remote_servers import SshServer
from tests.support.steps import folder, marker, processes_with, reachable_root

# The job's heartbeat thread reads what this test wrote: real commits, not one transaction.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel")]


def run(pipeline: Pipeline) -> Pipeline:
    [job] = jobs.run_pending(kinds=[services.KIND])
    assert pipeline.job is not None and job.pk == pipeline.job.pk
    pipeline.refresh_from_db()
    return pipeline


def steps_of(p: Pipeline) -> list[tuple[str, str, int | None, str]]:
    return [(s.name, s.state, s.exit_code, s.reason) for s in p.steps.all()]


def log_of(p: Pipeline) -> str:
    return "\n".join(JobLogLine.objects.filter(job=p.job).values_list("text", flat=True))


def test_a_green_pipeline_tests_the_exact_commit_in_a_workspace_it_then_removes(
    org: Organization, tmp_path: Path
) -> None:
    sha = commit(tmp_path / "repo", project(passing=True), "Add the sum\n\nWith a test.")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = run(services.run_pipeline(service, SYSTEM, "cli"))
    assert pipeline.state == State.SUCCEEDED, (steps_of(pipeline), log_of(pipeline))
    assert (pipeline.commit, pipeline.author) == (sha, "Ana Dev <ana@example.com>")
    assert pipeline.message == "Add the sum\n\nWith a test."
    assert steps_of(pipeline) == [
        ("checkout", State.SUCCEEDED, None, ""),
        ("read onwatch.toml", State.SUCCEEDED, None, ""),
        ("test", State.SUCCEEDED, 0, ""),
    ]
    assert all(s.seconds is not None and s.seconds >= 0 for s in pipeline.steps.all())
    test = pipeline.steps.get(name="test")
    assert test.command == "python3 -m unittest -v"
    assert "test_sum (test_app.AppTest" in test.tail and "OK" in test.tail
    # The output went to the job's log line by line too: its page follows it live.
    assert "test_sum (test_app.AppTest" in log_of(pipeline)
    assert pipeline.job is not None and pipeline.job.state == JobState.SUCCEEDED
    assert Job.objects.get(pk=pipeline.job.pk).queue == "pipelines"
    assert not workspace_of(pipeline).exists()
    assert Delivery.objects.count() == 0
    page = signed_in(make_member(org, "viewer")).get(f"/pipelines/{pipeline.pk}/")
    shown = page.content.decode()
    assert sha in shown and "python3 -m unittest -v" in shown and "test_sum" in shown
    # The pipeline and each of its three steps; ended, so the log is not followed.
    assert shown.count('class="state-succeeded"') == 4 and "logstream.js" not in shown
    assert f"#{pipeline.job.pk}</a>" in shown and "cancel it there" not in shown


def test_a_red_pipeline_fails_at_its_test_and_alerts_then_the_next_green_one_says_fixed(
    org: Organization, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    commit(repo, project(passing=False), "Break the sum")
    service = service_for(org, str(repo))
    red = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert red.state == State.FAILED
    assert steps_of(red)[-1] == ("test", State.FAILED, 1, "exited with 1")
    assert red.reason == "exited with 1"
    assert red.job is not None
    red.job.refresh_from_db()
    assert red.job.state == JobState.FAILED and "failed at test: exited with 1" in red.job.error
    [alert] = alerts_titled(f"Pipeline #{red.pk} of shop (main) failed at test")
    assert "What is wrong: test: exited with 1" in alert.body
    assert "AssertionError: 2 != 3" in alert.body  # the step's last lines
    assert f"/pipelines/{red.pk}/" in alert.body
    # One alert, the pipeline's own: the job's generic one would say it twice.
    assert Delivery.objects.count() == 1
    assert not workspace_of(red).exists()

    commit(repo, project(passing=True), "Fix the sum")
    green = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert green.state == State.SUCCEEDED
    [fixed] = alerts_titled(f"Pipeline #{green.pk} of shop (main) passes again: fixed")
    assert f"after pipeline #{red.pk} failed" in fixed.body and "Fix the sum" in fixed.body
    again = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert again.state == State.SUCCEEDED
    assert Delivery.objects.count() == 2, "a green pipeline after a green one said something"
    # The numbers the readiness board shows: last green, how long, how often red.
    evidence = services.evidence(service)
    assert evidence.last_passed == again.ended_at
    assert (evidence.recent.failed, evidence.recent.counted) == (1, 3)
    # Two green runs are too few for a median that means something.
    assert evidence.median_seconds is None and evidence.green_runs == 2


def test_a_malformed_onwatch_toml_fails_the_first_step_with_numbered_lines(
    org: Organization, tmp_path: Path
) -> None:
    toml = '[build]\ncommand = "true"\n\n[test]\ncommand = 3\n[web]\nport = 80\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Configure")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.FAILED
    first = "onwatch.toml line 5: test.command must be text, got a number"
    assert steps_of(pipeline)[1:] == [("read onwatch.toml", State.FAILED, None, first)]
    tail = pipeline.steps.get(name="read onwatch.toml").tail
    assert "onwatch.toml line 7: web.port is not a setting of [web] (it has: command)" in tail
    broken = "[test]\ncommand = 'x'\ncommand = 'y'\n"
    commit(tmp_path / "repo", {"onwatch.toml": broken}, "Twice")
    again = run(services.run_pipeline(pipeline.service, SYSTEM, "ui"))
    reason = again.steps.get(name="read onwatch.toml").reason
    assert reason.startswith("onwatch.toml line 3: "), reason


def test_a_repository_onwatch_cannot_read_says_what_to_add_in_one_line(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "repo", {"README.md": "# shop\n"}, "Start")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    step = pipeline.steps.get(name="read onwatch.toml")
    assert step.state == State.FAILED
    assert step.reason.startswith("no onwatch.toml and nothing onwatch recognises")
    assert "add an onwatch.toml" in step.reason and "\n" not in step.reason
    assert pipeline.reason == step.reason


def test_a_program_that_is_not_installed_is_named_as_the_cause(
    org: Organization, tmp_path: Path
) -> None:
    toml = '[test]\ncommand = "no-such-tool run"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Use a tool")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    test = pipeline.steps.get(name="test")
    assert (test.state, test.exit_code) == (State.FAILED, 127)
    assert test.reason.startswith("exited with 127: a program it runs was not found")
    assert "no-such-tool: command not found" in test.tail


def test_a_branch_that_does_not_exist_ends_the_checkout_with_one_line(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"), branch="release")
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    [checkout] = pipeline.steps.all()
    assert (checkout.name, checkout.state) == ("checkout", State.FAILED)
    assert checkout.reason == (
        f"the branch release does not exist in {tmp_path / 'repo'}; check the service's branch"
    )
    assert not workspace_of(pipeline).exists()


@pytest.mark.parametrize(
    "url", ["/nonexistent/shop.git", "https://127.0.0.1:9/shop.git"], ids=["path", "https"]
)
def test_an_unreachable_repository_ends_the_checkout_with_one_line(
    org: Organization, url: str
) -> None:
    pipeline = run(services.run_pipeline(service_for(org, url), SYSTEM, "ui"))
    [checkout] = pipeline.steps.all()
    assert checkout.state == State.FAILED
    assert checkout.reason.startswith(f"could not fetch {url}: ")
    assert checkout.reason.endswith("; check the address and that its server is up")
    assert "\n" not in checkout.reason
    assert alerts_titled(f"Pipeline #{pipeline.pk} of shop (main) failed at checkout")


def test_a_step_that_hangs_is_stopped_at_its_time_limit_with_one_line_and_nothing_left(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipelines, "STEP_LIMITS", sandbox.Limits(seconds=3))
    word = marker()
    hangs = f'[test]\ncommand = "echo waiting for the server; exec -a {word} sleep 600"\n'
    commit(tmp_path / "repo", {"onwatch.toml": hangs}, "Hang")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    line = (
        "stopped after 3 s, the step's time limit; its last lines show where it hung: make "
        "it finish, or stop what it waits for"
    )
    assert (pipeline.state, pipeline.reason) == (State.FAILED, line)
    assert steps_of(pipeline)[-1] == ("test", State.FAILED, None, line)
    assert processes_with(word) == [], "the hung step is still running"
    assert not workspace_of(pipeline).exists()
    [alert] = alerts_titled(f"Pipeline #{pipeline.pk} of shop (main) failed at test")
    assert line in alert.body and "waiting for the server" in alert.body


# Each misbehaving step, as its command in onwatch.toml, and the one line it fails with.
RUNAWAYS = {
    "fork bomb": (
        "b() {{ b | b & }}; b; exec -a {word} sleep 60",
        "started more than 64 processes",
    ),
    "memory hog": (
        "exec -a {word} python3 -c \\\"b = [b'x' * 2**20 for _ in iter(int, 1)]\\\"",
        "used more than 256 MiB of memory",
    ),
    # Long lines: each line is a row of the job's log, and 1 MiB of short ones (50,000 rows)
    # takes half a minute to store on a loaded machine.
    "flood": ("exec -a {word} yes $(printf %01000d 0)", "printed more than 1 MiB"),
}


def waiting_pipeline(
    org: Organization, repo: Path, secrets: dict[str, str] | None = None
) -> tuple[Pipeline, threading.Thread, str]:
    """Another service's pipeline, running in a thread: its step waits until its workspace
    holds a file named go, then passes. Also the word its step's processes are found by."""
    word = marker()
    waits = f"touch started; until [ -e go ]; do sleep 0.1; done; python3 -m unittest # {word}"
    commit(repo, {**project(), "onwatch.toml": f'[test]\ncommand = "{waits}"\n'}, "Wait")
    fields = services.ServiceFields(name="blog", git_url=str(repo), branch="main")
    other = services.run_pipeline(services.add_service(org, fields, SYSTEM, secrets), SYSTEM, "ui")
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None
    thread = run_in_thread(job)
    wait_until((workspace_of(other) / "started").exists, 60, "the other pipeline's step")
    return other, thread, word


def passes_at_last(other: Pipeline, thread: threading.Thread) -> None:
    (workspace_of(other) / "go").touch()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the other pipeline did not end"
    other.refresh_from_db()
    assert other.state == State.SUCCEEDED, (steps_of(other), log_of(other))


def test_a_fork_bomb_a_memory_hog_and_a_flood_fail_their_step_while_another_pipeline_runs_on(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ends its pipeline as failed with the limit it hit, nothing of it left running,
    while another service's pipeline, running all along, passes afterwards."""
    limits = sandbox.Limits(memory_bytes=256 * 1024**2, processes=64, output_bytes=1024**2)
    monkeypatch.setattr(pipelines, "STEP_LIMITS", limits)
    other, thread, _ = waiting_pipeline(org, tmp_path / "blog")
    service = service_for(org, str(tmp_path / "repo"))
    for name, (command, said) in RUNAWAYS.items():
        word = marker()
        toml = f'[test]\ncommand = "{command.format(word=word)}"\n'
        commit(tmp_path / "repo", {"onwatch.toml": toml}, name)
        pipeline = beside_a_writer(lambda: run(services.run_pipeline(service, SYSTEM, "ui")))
        line = f"{said}, the step's limit"
        assert (pipeline.state, pipeline.reason) == (State.FAILED, line), name
        assert steps_of(pipeline)[-1] == ("test", State.FAILED, None, line), name
        assert processes_with(word) == [], f"something of the {name} is still running"
        assert not workspace_of(pipeline).exists()
    passes_at_last(other, thread)


# 1 MiB of 21-byte lines: 50,000 rows of the job's log.
SHORT_LINES = "yes 01234567890123456789"
FLOOD_SECONDS = 10


def test_a_flood_of_short_lines_is_stopped_at_the_output_limit_within_seconds(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each line is a row of the job's log; stored one by one they took half a minute
    before the limit stopped the step, while it went on filling the database."""
    monkeypatch.setattr(pipelines, "STEP_LIMITS", sandbox.Limits(output_bytes=1024**2))
    toml = f'[test]\ncommand = "{SHORT_LINES}"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Flood")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    line = "printed more than 1 MiB, the step's limit"
    assert (pipeline.state, pipeline.reason) == (State.FAILED, line)
    test = pipeline.steps.get(name="test")
    assert test.seconds is not None and test.seconds < FLOOD_SECONDS, test.seconds
    # Every whole line it printed up to the limit is in the log, and no more.
    stored = JobLogLine.objects.filter(job=pipeline.job, text="01234567890123456789")
    assert stored.count() == 1024**2 // 21


SNOOP = """for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$f"; done
grep -l blog-token /proc/[0-9]*/environ
echo done looking
"""


def test_a_step_cannot_read_the_secrets_of_another_services_running_step(
    org: Organization, tmp_path: Path
) -> None:
    secret = "blog-token-5ca1ab1e"
    other, thread, word = waiting_pipeline(org, tmp_path / "blog", {"BLOG_TOKEN": secret})
    # There to be read: the other step's processes hold it in their environment.
    held = [Path(f"/proc/{pid}/environ").read_bytes() for pid in processes_with(word)]
    assert any(secret.encode() in environ for environ in held)
    snoops = {"onwatch.toml": '[test]\ncommand = "bash snoop.sh"\n', "snoop.sh": SNOOP}
    commit(tmp_path / "repo", snoops, "Look around")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = beside_a_writer(lambda: run(services.run_pipeline(service, SYSTEM, "ui")))
    seen = log_of(pipeline)
    # It read its own environment, and nothing of the other's.
    assert f"ONWATCH_PIPELINE={pipeline.pk}" in seen and "done looking" in seen, seen
    assert secret not in seen and "BLOG_TOKEN" not in seen
    passes_at_last(other, thread)


def test_secrets_are_stored_encrypted_and_given_to_the_steps_as_environment(
    org: Organization, tmp_path: Path
) -> None:
    value = "s3cr3t-token-9f8e7d\nsecond line"
    digest = hashlib.sha256(value.encode()).hexdigest()
    # The step proves it got the value without printing it (masking is not this test's).
    check = (
        "import hashlib, os\n"
        'print("digest", hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest())\n'
    )
    toml = '[test]\ncommand = "python3 check_env.py"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml, "check_env.py": check}, "Use it")
    service = service_for(org, str(tmp_path / "repo"), secrets={"API_TOKEN": value})
    services.set_secret(service, "OTHER", "another-secret-value", SYSTEM)
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert f"digest {digest}" in log_of(pipeline)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets, deploy_key FROM deploys_service")
        stored = " ".join(str(c) for row in cursor.fetchall() for c in row)
    for plain in ("s3cr3t-token-9f8e7d", "another-secret-value", "API_TOKEN", "OPENSSH"):
        assert plain not in stored
    audit = " ".join(str(e.data) for e in AuditEntry.objects.all())
    assert "API_TOKEN" in audit and "OTHER" in audit  # names are audited
    assert "s3cr3t" not in audit and "another-secret-value" not in audit


def test_cancel_stops_the_running_step_and_ends_the_pipeline_cancelled(
    org: Organization, tmp_path: Path
) -> None:
    # In its workspace: the sandbox shows the step nothing else of the machine.
    word = marker()
    slow = f'[test]\ncommand = "touch started; exec -a {word} sleep 600"\n'
    commit(tmp_path / "repo", {"onwatch.toml": slow}, "Slow")
    pipeline = services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui")
    started = workspace_of(pipeline) / "started"
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None
    thread = run_in_thread(job)
    wait_until(started.exists, 60, "the step")
    assert processes_with(word)
    assert workspace_of(pipeline).exists()
    beside_a_writer(lambda: jobs.cancel(job, "ana@example.com"))
    thread.join(timeout=30)
    assert not thread.is_alive(), "the pipeline did not end after the cancel"
    pipeline.refresh_from_db()
    job.refresh_from_db()
    assert (job.state, pipeline.state) == (JobState.CANCELLED, State.CANCELLED)
    assert steps_of(pipeline)[-1] == ("test", State.CANCELLED, None, "cancelled")
    assert not processes_with(word), "the step outlived the cancel"
    assert not workspace_of(pipeline).exists()
    assert Delivery.objects.count() == 0


def test_deleting_a_service_stops_its_pipelines_and_removes_all_it_had(
    org: Organization, tmp_path: Path
) -> None:
    """On its page, confirmed with its name: its running pipeline is stopped, its
    workspaces, caches, secrets and history (pipelines, steps, logs) are gone, and the
    audit log says who did it. Another service keeps all it has."""
    other = services.add_service(
        org, services.ServiceFields(name="blog", git_url="/srv/git/blog.git"), SYSTEM
    )
    kept = Pipeline.objects.create(service=other, branch="main", trigger="ui")
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"), secrets={"API_TOKEN": "s3cret-value"})
    done = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert done.state == State.SUCCEEDED, (steps_of(done), log_of(done))
    assert caches_of(service)["uv"].is_dir()
    word = marker()
    slow = f'[test]\ncommand = "touch started; exec -a {word} sleep 600"\n'
    commit(tmp_path / "repo", {"onwatch.toml": slow}, "Slow")
    running = services.run_pipeline(service, SYSTEM, "ui")
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None and job.pk == running.job_id
    thread = run_in_thread(job)
    wait_until((workspace_of(running) / "started").exists, 60, "the step")
    admin = signed_in(make_member(org, "admin"))
    page = admin.get(f"/services/{service.pk}/delete/")
    assert "Type <strong>shop</strong> to confirm" in page.content.decode()
    wrong = beside_a_writer(
        lambda: admin.post(f"/services/{service.pk}/delete/", {"confirm": "blog"})
    )
    assert wrong.status_code == 400
    assert "Type the service&#x27;s name, shop, to delete it" in wrong.content.decode()
    assert Service.objects.filter(pk=service.pk).exists() and processes_with(word)
    gone = beside_a_writer(
        lambda: admin.post(f"/services/{service.pk}/delete/", {"confirm": "shop"})
    )
    assert gone.status_code == 302 and gone["Location"] == "/services/"
    thread.join(timeout=30)
    assert not thread.is_alive() and not processes_with(word)
    assert not Service.objects.filter(pk=service.pk).exists()
    assert list(Pipeline.objects.values_list("pk", flat=True)) == [kept.pk]
    # Its pipelines' jobs and their logs went with it (the running one ended first).
    assert not Job.objects.filter(pk__in=[done.job_id, job.pk]).exists()
    assert not JobLogLine.objects.filter(job_id__in=[done.job_id, job.pk]).exists()
    work = Path(settings.WORK_DIR)
    assert not (work / "workspaces" / str(service.pk)).exists()
    assert not (work / "caches" / str(service.pk)).exists()
    [entry] = AuditEntry.objects.filter(action="service-deleted")
    assert entry.target == "shop" and entry.data["cancelled"] == [running.pk]
    assert entry.data["pipelines"] == 2 and "s3cret-value" not in str(entry.data)
    assert Service.objects.get(pk=other.pk).pipelines.count() == 1


def test_a_pipeline_cancelled_before_it_started_says_so(org: Organization) -> None:
    pipeline = services.run_pipeline(service_for(org, "/nonexistent/x.git"), SYSTEM, "ui")
    assert pipeline.job is not None
    jobs.cancel(pipeline.job, "ana@example.com")
    pipeline.refresh_from_db()
    assert (pipeline.state, pipeline.reason) == (State.CANCELLED, "cancelled by ana@example.com")


def test_a_pipeline_whose_worker_died_ends_interrupted_and_alerts(
    org: Organization, tmp_path: Path
) -> None:
    pipeline = services.run_pipeline(service_for(org, "/nonexistent/x.git"), SYSTEM, "ui")
    job = jobs.claim("gone-worker", [services.KIND])
    assert job is not None
    # What the dead worker had done: the pipeline running, a step under way, a workspace.
    Pipeline.objects.filter(pk=pipeline.pk).update(state=State.RUNNING)
    pipeline.steps.create(position=1, name="checkout", state=State.RUNNING)
    workspace_of(pipeline).mkdir(parents=True)
    Job.objects.filter(pk=job.pk).update(lease_until=job.started_at)
    [reaped] = jobs.reap_expired()
    pipeline.refresh_from_db()
    assert reaped.state == JobState.INTERRUPTED
    assert pipeline.state == State.INTERRUPTED and "run it again" in pipeline.reason
    assert steps_of(pipeline) == [("checkout", State.INTERRUPTED, None, pipeline.reason)]
    assert not workspace_of(pipeline).exists()
    [alert] = Delivery.objects.all()
    assert alert.title == f"Pipeline #{pipeline.pk} of shop (main) was interrupted at checkout"


def test_a_worker_starting_removes_the_workspaces_dead_workers_left_and_no_other(
    org: Organization,
) -> None:
    """A killed worker runs no clean-up, and the reaper that ends its pipeline may run on
    another machine: the next worker here removes what it left, but not the workspace of a
    pipeline another worker of this machine is running."""
    service = service_for(org, "/nonexistent/x.git")
    dead = subprocess.Popen(["true"])
    dead.wait()
    here = socket.gethostname()
    workers = {"ended": "", "dead": f"{here}:{dead.pid}:1", "alive": f"{here}:{os.getpid()}:1"}
    made = {}
    for name, worker in workers.items():
        pipeline = services.run_pipeline(service, SYSTEM, "ui")
        assert pipeline.job is not None
        Job.objects.filter(pk=pipeline.job.pk).update(worker=worker, state=JobState.RUNNING)
        state = State.FAILED if name == "ended" else State.RUNNING
        Pipeline.objects.filter(pk=pipeline.pk).update(state=state)
        made[name] = workspace_of(pipeline)
        (made[name] / "src").mkdir(parents=True)
    made["gone"] = made["ended"].parent / "999999"
    made["gone"].mkdir()
    # Moved away by a worker that stopped before its removal was done.
    made["trash"] = work_folder("trash") / f"{dead.pid}-{service.pk}-41-123"
    # Moved away by a worker beside it, which is removing it now.
    made["trash beside"] = work_folder("trash") / f"{os.getpid()}-{service.pk}-42-124"
    for trashed in (made["trash"], made["trash beside"]):
        (trashed / "src").mkdir(parents=True)
    made["mirror"] = workdir.mirror_of(service.pk)
    made["deleted's mirror"] = workdir.mirror_of(999999)
    for mirror in (made["mirror"], made["deleted's mirror"]):
        (mirror / "objects").mkdir(parents=True)
    stopper = loops.Stopper()
    stopper.halt()
    loops.run_worker(stopper)
    assert {name: path.exists() for name, path in made.items()} == {
        "ended": False,
        "dead": False,
        "alive": True,
        "gone": False,
        "trash": False,
        "trash beside": True,
        "mirror": True,
        "deleted's mirror": False,
    }
    shutil.rmtree(made["trash beside"])  # its worker's, which is this process


def test_the_worker_goes_on_while_a_workspace_is_removed_and_the_next_run_finds_it_gone(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large checkout takes its time to remove: the pipeline ends, and its worker takes
    its next job, without waiting for it. The workspace has left the service's folder by
    then, before the service's caches are let go."""
    go_on = threading.Event()
    removing = workdir._remove_quietly

    def slow(path: Path) -> None:
        go_on.wait(60)
        removing(path)

    monkeypatch.setattr(workdir, "_remove_quietly", slow)
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"))
    trash = work_folder("trash")
    try:
        first = run(services.run_pipeline(service, SYSTEM, "ui"))
        assert first.state == State.SUCCEEDED, log_of(first)
        assert not workspace_of(first).exists()
        [moved] = trash.iterdir()
        assert moved.name.startswith(f"{os.getpid()}-{service.pk}-{first.pk}-")
        second = run(services.run_pipeline(service, SYSTEM, "ui"))
        assert second.state == State.SUCCEEDED, log_of(second)
        assert not workspace_of(second).exists()
        assert len(list(trash.iterdir())) == 2  # neither removal done, nothing waited
        assert sorted(p.name for p in workspace_of(first).parent.iterdir()) == ["caches"]
    finally:
        go_on.set()
    wait_until(lambda: not any(trash.iterdir()), 60, "the removals")


def test_python_output_reaches_the_log_as_printed_in_order_with_stderr(
    org: Organization, tmp_path: Path
) -> None:
    """Without PYTHONUNBUFFERED, Python holds stdout back in blocks when it goes to a pipe,
    and every stderr line would come before it."""
    script = (
        "import sys\nfor i in range(3):\n"
        "    print('out', i)\n    print('err', i, file=sys.stderr)\n"
    )
    files = {"onwatch.toml": '[test]\ncommand = "python3 order.py"\n', "order.py": script}
    commit(tmp_path / "repo", files, "Print in order")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    printed = [line for line in log_of(pipeline).splitlines() if line[:4] in ("out ", "err ")]
    assert printed == ["out 0", "err 0", "out 1", "err 1", "out 2", "err 2"]


@pytest.fixture
def small_disk(settings: Any) -> Iterator[Path]:
    """A real 96 MiB filesystem (tmpfs) as the work folder, unmounted afterwards: room for
    the uv onwatch lends the steps (~40 MB) and a little more. Needs root, as onwatch's
    tests run in CI."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    with reachable_root() as root:
        disk = folder(root, "disk", 0o711)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96m,mode=711", "tmpfs", str(disk)], check=True
        )
        settings.WORK_DIR = disk
        settings.WORK_MIN_FREE_MB = 16
        try:
            yield disk
        finally:
            subprocess.run(["umount", "--lazy", str(disk)], check=True)


DISK_FULL = "the disk holding onwatch's work folder is full: {} has {} free"


def test_a_build_that_fills_the_disk_fails_in_one_line_and_its_workspace_goes(
    org: Organization, tmp_path: Path, small_disk: Path
) -> None:
    word = marker()
    toml = f'[build]\ncommand = "head -c 200M /dev/zero > big # {word}"\n' + TOML
    commit(tmp_path / "repo", {**project(), "onwatch.toml": toml}, "Fill the disk")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    line = DISK_FULL.format(small_disk, "0 bytes") + "; free space and run again"
    assert pipeline.state == State.FAILED, log_of(pipeline)
    assert pipeline.reason == line
    assert steps_of(pipeline)[-1] == ("build", State.FAILED, 1, line)
    assert processes_with(word) == []
    # The workspace is gone, so is the space it took (it is removed beside the worker's
    # path, which the next pipeline waits for when it needs the space).
    assert not workspace_of(pipeline).exists()
    commit(tmp_path / "repo", project(), "Fill it no more")
    again = run(services.run_pipeline(pipeline.service, SYSTEM, "ui"))
    assert again.state == State.SUCCEEDED, log_of(again)
    workdir.removals_done()
    assert shutil.disk_usage(small_disk).free > 50 * 1024**2


def test_a_pipeline_does_not_start_with_less_free_space_than_its_floor(
    org: Organization, tmp_path: Path, small_disk: Path
) -> None:
    commit(tmp_path / "repo", project(), "Start")
    with (small_disk / "filler").open("wb") as filler:
        filler.write(b"\0" * 85 * 1024**2)
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    free = sandbox.size(shutil.disk_usage(small_disk).free)
    line = (
        DISK_FULL.format(small_disk, free)
        + ", less than the 16 MiB a pipeline needs to start; free space and run again"
    )
    assert (pipeline.state, pipeline.reason) == (State.FAILED, line)
    assert steps_of(pipeline) == [("checkout", State.FAILED, None, line)]
    assert not pipeline.commit, "it fetched though it said it would not start"
    page = signed_in(make_member(org, "viewer")).get(f"/services/{pipeline.service_id}/")
    assert html.escape(line) in page.content.decode()


def test_pipelines_have_a_queue_of_their_own_with_one_slot_by_default() -> None:
    assert settings.JOB_QUEUES["pipelines"] == 1
    assert jobs.QUEUE_OF[services.KIND] == "pipelines"


def test_an_ssh_repository_pins_its_host_key_on_first_use_and_needs_the_deploy_key(
    org: Organization, tmp_path: Path, sshd: SshServer
) -> None:
    sha = commit(tmp_path / "repo", project(), "Start")
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{tmp_path / 'repo'}"
    service = service_for(org, url)
    refused = run(services.run_pipeline(service, SYSTEM, "ui"))
    [checkout] = refused.steps.all()
    assert checkout.reason == (
        f"{url} refused onwatch's deploy key; add the public key shown on the service's page "
        "to the repository's deploy keys"
    )
    service.refresh_from_db()
    assert ssh.fingerprints(service.known_hosts) == [f"ssh-ed25519 {sshd.fingerprint()}"]
    assert f"pinned the server's host key ssh-ed25519 {sshd.fingerprint()}" in checkout.tail
    sshd.authorize(service.deploy_public_key)
    green = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert (green.state, green.commit) == (State.SUCCEEDED, sha), log_of(green)
    sshd.restart_with_new_host_key()
    changed = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert changed.steps.get().reason.startswith(
        f"the SSH server of {url} no longer shows the host key onwatch pinned"
    )
    # Changed on purpose: an admin forgets the old key, and the next run pins the new one.
    admin = signed_in(make_member(org, "admin"))
    admin.post(f"/services/{service.pk}/forget-host-key/")
    pinned_again = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pinned_again.state == State.SUCCEEDED, log_of(pinned_again)
    service.refresh_from_db()
    assert ssh.fingerprints(service.known_hosts) == [f"ssh-ed25519 {sshd.fingerprint()}"]
    assert AuditEntry.objects.filter(action="service-host-key-forgotten").count() == 1


def test_a_remote_repository_is_fetched_through_a_mirror_of_its_service_no_step_sees(
    org: Organization, tmp_path: Path, sshd: SshServer
) -> None:
    """Only what is new crosses the network at each pipeline; the mirror is onwatch's
    alone: no step, of this service or another, can see it."""
    repo = tmp_path / "repo"
    commit(repo, project(), "Start")
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{repo}"
    service = service_for(org, url)
    sshd.authorize(service.deploy_public_key)
    mirror = workdir.mirror_of(service.pk)
    look = f'[test]\ncommand = "ls {mirror.parent} || echo no mirror here"\n'
    first_sha = commit(repo, {"onwatch.toml": look}, "Look for the mirror")
    first = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert (first.state, first.commit) == (State.SUCCEEDED, first_sha), log_of(first)
    assert "no mirror here" in first.steps.get(name="test").tail
    assert stat.S_IMODE(mirror.parent.stat().st_mode) == 0o700
    assert git(mirror, "rev-parse", "refs/heads/main") == first_sha
    objects = {p for p in (mirror / "objects").rglob("*") if p.is_file()}
    second_sha = commit(repo, project(passing=False), "Break the sum")
    second = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert (second.state, second.commit) == (State.FAILED, second_sha), log_of(second)
    assert git(mirror, "rev-parse", "refs/heads/main") == second_sha
    # What was new, added to what it had.
    assert objects < {p for p in (mirror / "objects").rglob("*") if p.is_file()}
    admin = signed_in(make_member(org, "admin"))
    gone = beside_a_writer(
        lambda: admin.post(f"/services/{service.pk}/delete/", {"confirm": "shop"})
    )
    assert gone.status_code == 302 and not mirror.exists()


def test_where_steps_cannot_run_the_first_step_says_why_and_so_does_the_service_page(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"))
    monkeypatch.setenv("ONWATCH_STEP_USER", "no-such-step-user")
    why = (
        "ONWATCH_STEP_USER=no-such-step-user is not a user on this machine; create it "
        "(adduser --system onwatch-steps) or name another unprivileged user"
    )
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert steps_of(pipeline) == [("checkout", State.FAILED, None, why)]
    assert pipeline.reason == why and "Traceback" not in log_of(pipeline)
    page = signed_in(make_member(org, "viewer")).get(f"/services/{service.pk}/").content.decode()
    assert f"Steps cannot run on this machine: {why}" in page
    by = sandbox.memory_enforced_by()
    assert ("enforced by the kernel (cgroups)" if by == "cgroup" else "(rlimits)") in page


def test_a_uv_project_runs_pytest_with_onwatchs_uv_a_cache_and_names_its_failing_test(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "repo", uv_project(), "A uv project")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    names = [s.name for s in pipeline.steps.all()]
    assert names == ["checkout", "read onwatch.toml", "build", "test"], log_of(pipeline)
    build, test = pipeline.steps.get(name="build"), pipeline.steps.get(name="test")
    assert (build.command, build.state) == ("uv sync --frozen", State.SUCCEEDED), log_of(pipeline)
    # Nothing in the log a user would take for trouble: uv copies without trying links,
    # and is told to trust the machine's certificates by the name it knows.
    assert "Failed to hardlink" not in log_of(pipeline)
    assert "warning" not in log_of(pipeline).lower()
    assert test.state == State.FAILED and test.exit_code == 1
    assert "1 failed, 1 passed" in test.tail
    # The service's uv cache kept what was downloaded, outside the removed workspace.
    uv_cache = caches_of(service)["uv"]
    assert any(uv_cache.rglob("pytest*")), "nothing was cached"
    assert not workspace_of(pipeline).exists()
    # pytest's JUnit report, read: counts and the failing test by name.
    counts = (pipeline.tests_total, pipeline.tests_failed, pipeline.tests_errors)
    assert counts == (2, 1, 0), log_of(pipeline)
    [failing] = pipeline.failing_tests
    assert (failing["name"], failing["classname"]) == ("test_total", "test_app")
    assert failing["message"].startswith("AssertionError: the total is off")
    page = signed_in(make_member(org, "viewer")).get(f"/pipelines/{pipeline.pk}/")
    assert "<li><code>test_total</code> (test_app): AssertionError" in page.content.decode()
    [alert] = alerts_titled(f"Pipeline #{pipeline.pk} of shop (main) failed at test")
    assert "Failing tests: test_total\n" in alert.body
    api = pipeline_out(pipeline)
    assert api["tests_total"] == 2 and api["failing_tests"] == [failing]


def test_a_node_project_runs_npm_test_with_an_npm_cache_kept_for_its_service(
    org: Organization, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    node_project(repo)
    commit(repo, {}, "A Node project")
    service = service_for(org, str(repo))
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    steps = [(s.name, s.command) for s in pipeline.steps.all()]
    read = ("read onwatch.toml", projectfile.FILE)
    assert steps[1:] == [read, ("build", "npm ci"), ("test", "npm test")]
    assert "no onwatch.toml: a Node project with package-lock.json" in log_of(pipeline)
    test = pipeline.steps.get(name="test").tail
    assert "ok 1 - pads the total" in test and "# pass 1" in test, test
    # npm kept what it unpacked in the service's cache, outside the removed workspace.
    assert any((caches_of(service)["npm"] / "_cacache").rglob("*")), "npm cached nothing"
    assert not workspace_of(pipeline).exists()


def test_a_requirements_txt_project_is_tested_by_pytest_and_its_failing_test_named(
    org: Organization, tmp_path: Path
) -> None:
    files = {"requirements.txt": "# the standard library is enough\n", "test_app.py": PYTESTS}
    commit(tmp_path / "repo", files, "A pip project")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert [s.name for s in pipeline.steps.all()][2:] == ["build", "test"], log_of(pipeline)
    assert "no onwatch.toml: a Python project with requirements.txt" in log_of(pipeline)
    assert pipeline.steps.get(name="build").state == State.SUCCEEDED, log_of(pipeline)
    test = pipeline.steps.get(name="test")
    assert (test.state, test.exit_code) == (State.FAILED, 1)
    assert (pipeline.tests_total, pipeline.tests_failed) == (2, 1), log_of(pipeline)
    assert [t["name"] for t in pipeline.failing_tests] == ["test_total"]
    assert not workspace_of(pipeline).exists()


@pytest.mark.skipif(not sandbox.shares_root(), reason="steps run as onwatch's own user")
def test_uv_hard_links_from_the_services_cache_into_the_workspace(
    org: Organization, tmp_path: Path
) -> None:
    """Not a copy of every file per build (a second or more): the cache and the workspace
    are on one mount in the sandbox, and uv is told to link."""
    site = ".venv/lib/python3*/site-packages/pytest/__init__.py"
    toml = (
        f'[build]\ncommand = "uv sync --frozen"\n[test]\ncommand = "stat -c \'links %h\' {site}"\n'
    )
    commit(tmp_path / "repo", {**uv_project(), "onwatch.toml": toml}, "A uv project")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert "links 2" in pipeline.steps.get(name="test").tail, log_of(pipeline)
    assert "warning" not in log_of(pipeline).lower()
    # The cache outlives the workspace, beside which it is kept.
    assert any(caches_of(service)["uv"].rglob("pytest*")), "nothing was cached"
    assert caches_of(service)["uv"].parent.parent == workspace_of(pipeline).parent
    assert not workspace_of(pipeline).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="steps run as onwatch's own user")
def test_the_workspace_and_caches_are_handed_to_the_step_user_once_a_pipeline(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not again at every step (a walk of thousands of files each): the first step's hand
    over holds for the next, which still writes both."""
    walked: list[Path] = []
    hand_over = sandbox._hand_over

    def counted(step: sandbox.Step, user: tuple[int, int]) -> None:
        walked.append(step.workspace)
        hand_over(step, user)

    monkeypatch.setattr(sandbox, "_hand_over", counted)
    build = "mkdir -p $UV_CACHE_DIR/kept && touch built $UV_CACHE_DIR/kept/built"
    test = "touch tested $UV_CACHE_DIR/kept/tested && echo wrote both"
    toml = f'[build]\ncommand = "{build}"\n[test]\ncommand = "{test}"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Two steps")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert "wrote both" in log_of(pipeline)
    # (The sandbox's trial, run once by a fresh onwatch, is handed over a folder of its own.)
    assert walked.count(workspace_of(pipeline)) == 1, walked
    assert (caches_of(service)["uv"] / "kept" / "tested").exists()


def pushed(service: Service, repo: Path) -> str:
    """The repository's main branch pushed to onwatch's own copy, as `git push onwatch`."""
    copy = services.pushed_repository(service)
    git_wrapper.init_bare(copy)
    git(repo, "push", "--quiet", str(copy), "main")
    return git(repo, "rev-parse", "HEAD")


def hashed(repo: Path) -> dict[str, str]:
    files = (p for p in (repo / "objects").rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.skipif(os.geteuid() != 0, reason="steps run as onwatch's own user: it copies")
def test_a_step_cannot_change_onwatchs_copy_its_checkout_links_git_objects_from(
    org: Organization, tmp_path: Path
) -> None:
    """The workspace's git objects are hard links into onwatch's copy of the repository (no
    packing, no copy); they stay onwatch's and read-only: a step that tries to write them
    changes nothing there, and may still remove its own links. The next pipeline gets a
    clean workspace: nothing the first one left."""
    spoil = (
        "echo linked: $(find .git/objects -type f -links +1 | wc -l); "
        "for f in $(find .git/objects -type f); do chmod u+w $f; echo x >> $f; done; "
        "find .git/objects -type f -delete; touch left-behind; echo tried"
    )
    repo = tmp_path / "repo"
    commit(repo, {"onwatch.toml": f'[test]\ncommand = "{spoil} 2>&1"\n'}, "Spoil")
    service = service_for(org, str(tmp_path / "elsewhere"))
    first_sha = pushed(service, repo)
    copy = services.pushed_repository(service)
    before = hashed(copy)
    first = run(services.run_pipeline(service, SYSTEM, "push", services.Push(first_sha)))
    tail = first.steps.get(name="test").tail
    assert first.state == State.SUCCEEDED and "tried" in tail, log_of(first)
    linked = int(tail.rsplit("linked: ", 1)[1].split()[0])  # not the command's own line
    assert linked == len(before) > 0, tail
    assert "Operation not permitted" in tail and "Permission denied" in tail, tail
    assert hashed(copy) == before
    git(copy, "fsck", "--strict")
    look = '[test]\ncommand = "test -e left-behind && echo dirty || echo clean"\n'
    second_sha = commit(repo, {"onwatch.toml": look}, "Look")
    pushed(service, repo)
    second = run(services.run_pipeline(service, SYSTEM, "push", services.Push(second_sha)))
    assert second.state == State.SUCCEEDED, log_of(second)
    assert "clean" in second.steps.get(name="test").tail and second.commit == second_sha


def test_each_steps_sandbox_is_made_beside_the_pipelines_path(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first during the checkout (its command comes with it), each next one while the
    step before runs: none is set up, nor given its network, between two steps."""
    reported: list[dict[str, float]] = []
    monkeypatch.setattr(phases, "report", lambda pk, seconds: reported.append(seconds))
    assert sandbox.problem() is None  # its trial, once a process, would be on the path
    toml = '[build]\ncommand = "echo built > built"\n[test]\ncommand = "cat built"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Two steps")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert "built" in pipeline.steps.get(name="test").tail
    [seconds] = reported
    # Their one network (sandbox.Network), made beside the checkout.
    assert "overlapped: network: made" in seconds, seconds
    assert "network: made" not in seconds and "sandbox: network" not in seconds
    assert not list(workspace_of(pipeline).parent.glob(f"{pipeline.pk}*"))


def test_a_pipelines_steps_share_one_network_which_ends_with_it(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[sandbox.Network] = []
    network = sandbox.Network

    def noted(user: str = "") -> sandbox.Network:
        made.append(network(user))
        return made[-1]

    monkeypatch.setattr(sandbox, "Network", noted)
    build = "readlink /proc/self/ns/net > netns"
    test = "echo same: $(readlink /proc/self/ns/net | grep -c -x -F -f netns)"
    toml = f'[build]\ncommand = "{build}"\n[test]\ncommand = "{test}"\n'
    commit(tmp_path / "repo", {"onwatch.toml": toml}, "Two steps")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert "same: 1" in pipeline.steps.get(name="test").tail
    [one] = made
    assert one.proc.returncode is not None and one.slirp is None and one.fds == []


def test_a_missing_test_report_is_a_line_in_the_log_not_a_failure(
    org: Organization, tmp_path: Path
) -> None:
    files = {**project(), "onwatch.toml": TOML + 'report = "reports/junit.xml"\n'}
    commit(tmp_path / "repo", files, "Name a report")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert "no test results: cannot read the test report " in log_of(pipeline)
    assert pipeline.tests_total is None and pipeline.failing_tests == []


def test_a_test_command_that_exits_0_with_failures_in_its_report_fails_the_test_step(
    org: Organization, tmp_path: Path
) -> None:
    report = (
        '<testsuite name="s"><testcase name="test_ok"/>'
        '<testcase name="test_total"><failure message="off by one"/></testcase>'
        '<testcase name="test_io"><error message="no disk"/></testcase></testsuite>'
    )
    toml = '[test]\ncommand = "cp junit.xml.txt junit.xml"\nreport = "junit.xml"\n'
    files = {"onwatch.toml": toml, "junit.xml.txt": report}
    commit(tmp_path / "repo", files, "Tests that fail quietly")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.FAILED, log_of(pipeline)
    reason = "the test report lists 2 failing tests though the command exited 0"
    assert steps_of(pipeline)[-1] == ("test", State.FAILED, 0, reason)
    assert (pipeline.tests_total, pipeline.tests_failed, pipeline.tests_errors) == (3, 1, 1)
    assert alerts_titled(f"Pipeline #{pipeline.pk} of shop (main) failed at test")


def test_a_services_caches_are_used_by_one_of_its_pipelines_at_a_time(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"))
    pipeline = services.run_pipeline(service, SYSTEM, "ui")
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None
    # What another pipeline of the service (another worker, same machine) holds.
    with (work_folder("caches") / f"{service.pk}.lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        thread = run_in_thread(job)
        waiting = "waiting for another pipeline of this service to finish"
        wait_until(lambda: waiting in log_of(pipeline), 60, "the wait")
        assert not pipeline.steps.filter(name="test").exists()
    thread.join(timeout=60)
    pipeline.refresh_from_db()
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)


def test_a_pipeline_lets_its_services_caches_go_only_once_its_workspace_is_removed(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next pipeline of the service binds the service's folder and hides the
    workspaces beside its own: one vanishing while its sandbox starts would fail it."""
    commit(tmp_path / "repo", project(), "Start")
    service = service_for(org, str(tmp_path / "repo"))
    held_then: list[bool] = []

    def removing(path: Path) -> None:
        with (work_folder("caches") / f"{service.pk}.lock").open("a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held_then.append(False)
            except BlockingIOError:
                held_then.append(True)
        shutil.rmtree(path)

    monkeypatch.setattr(pipelines, "discard", removing)
    pipeline = run(services.run_pipeline(service, SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert held_then == [True] and not workspace_of(pipeline).exists()
    with (work_folder("caches") / f"{service.pk}.lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and let go after


SIGNING_KEY = (
    "-----BEGIN TEST PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "Qx9z\n"
    "-----END TEST PRIVATE KEY-----"
)


def every_text_onwatch_keeps(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> str:
    """Every place onwatch stores or shows text about the pipeline, as one text."""
    assert pipeline.job is not None
    rows = [
        *JobLogLine.objects.filter(job=pipeline.job).values_list("text", flat=True),
        *map(str, Job.objects.filter(pk=pipeline.job.pk).values()),
        *map(str, Pipeline.objects.filter(pk=pipeline.pk).values()),
        *map(str, pipeline.steps.values()),
        *map(str, Delivery.objects.values()),
        *map(str, AuditEntry.objects.values()),
    ]
    viewer = make_member(pipeline.service.org, "viewer")
    pages = [signed_in(viewer).get(f"/pipelines/{pipeline.pk}/").content.decode()]
    pages.append(signed_in(viewer).get(f"/services/{pipeline.service.pk}/").content.decode())
    raw = issue_token(viewer, pipeline.service.org, "test", ["services:read"], 1).raw
    answer = Client().get(
        f"/api/v1/services/pipelines/{pipeline.pk}/", headers={"authorization": f"Bearer {raw}"}
    )
    assert answer.status_code == 200
    assert follow(pipeline.pk) == 1  # what `onwatch pipelines run --wait` prints
    cli = capsys.readouterr()
    return "\n".join([*rows, *pages, answer.content.decode(), cli.out, cli.err])


def test_no_form_of_a_secret_survives_anywhere_onwatch_keeps_or_shows_text(
    org: Organization, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = '[test]\ncommand = "python3 leaky_step.py"\n'
    files = {"onwatch.toml": toml, "leaky_step.py": Path(leaky_step.__file__).read_text()}
    # The commit message quotes a line of the key too (a config pasted in by mistake).
    commit(tmp_path / "repo", files, f"Add the key {SIGNING_KEY.splitlines()[1]}")
    secrets = {"SIGNING_KEY": SIGNING_KEY, "PIN": "7q9"}
    pipeline = run(
        services.run_pipeline(
            service_for(org, str(tmp_path / "repo"), secrets=secrets), SYSTEM, "ui"
        )
    )
    assert pipeline.state == State.FAILED
    seen = every_text_onwatch_keeps(pipeline, capsys)
    assert seen.count("[secret SIGNING_KEY]") >= 15  # every form was printed, and hidden
    for form in forms(SIGNING_KEY):
        assert form not in seen and html.escape(form) not in seen, form
    # Too short to hide: printed as it is, and the service's page says so.
    assert "form 16: 7q9" in seen
    assert "<code>PIN</code>: too short to hide in logs" in seen


def test_a_work_folder_onwatch_cannot_make_is_named_on_the_service_page(
    org: Organization, tmp_path: Path, settings: Any
) -> None:
    (tmp_path / "a-file").write_text("")
    settings.WORK_DIR = tmp_path / "a-file" / "work"
    service = service_for(org, "/nonexistent/shop.git")
    page = signed_in(make_member(org, "viewer")).get(f"/services/{service.pk}/").content.decode()
    assert f"onwatch cannot make its work folder {settings.WORK_DIR} (Not a directory)" in page


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address that takes connections and never answers: git waits on it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/shop.git"


def test_a_first_sandbox_that_cannot_be_made_does_not_wait_out_the_fetch(
    org: Organization, silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step failed only once git gave up (up to twice its time limit); git is stopped."""
    monkeypatch.setattr(git_wrapper, "FETCH_SECONDS", 30)

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipelines, "share_bytecode", full)
    began = time.monotonic()
    pipeline = run(services.run_pipeline(service_for(org, silent_server), SYSTEM, "ui"))
    assert time.monotonic() - began < 10
    [checkout] = pipeline.steps.all()
    assert (checkout.state, pipeline.state) == (State.FAILED, State.FAILED)
    assert "No space left on device" in checkout.reason, checkout.reason
    assert not processes_with(silent_server)


def test_a_pipeline_cancelled_while_git_fetches_stops_git(
    org: Organization, silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git_wrapper, "FETCH_SECONDS", 30)
    pipeline = services.run_pipeline(service_for(org, silent_server), SYSTEM, "ui")
    job = jobs.claim("test-worker", [services.KIND])
    assert job is not None
    thread = run_in_thread(job)
    wait_until(lambda: bool(processes_with(silent_server)), 30, "the fetch")
    beside_a_writer(lambda: jobs.cancel(job, "ana@example.com"))
    # Within a poll of the cancel, not once git gives up (30 s here, 600 s by default).
    wait_until(lambda: not processes_with(silent_server), 5, "git stopped")
    thread.join(timeout=30)
    pipeline.refresh_from_db()
    assert pipeline.state == State.CANCELLED, log_of(pipeline)


def test_the_workspace_is_open_to_the_step_user_to_pass_through_only(
    org: Organization, tmp_path: Path
) -> None:
    """0711 whichever of git and the first sandbox came first (git made it 0755)."""
    commit(tmp_path / "repo", {"onwatch.toml": '[test]\ncommand = "stat -c %a ."\n'}, "Mode")
    pipeline = run(services.run_pipeline(service_for(org, str(tmp_path / "repo")), SYSTEM, "ui"))
    assert pipeline.state == State.SUCCEEDED, log_of(pipeline)
    assert pipeline.steps.get(name="test").tail.splitlines()[-1] == "711"
