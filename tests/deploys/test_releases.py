"""Releases, deploys and rollbacks with real components: a small app in a real git
repository, tested by a real pipeline, built in the sandbox, run by supervisord behind
Caddy, with clients sending requests without pause while it switches."""

from __future__ import annotations

import fcntl
import html
import os
import pwd
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from onwatch.core import jobs, loops
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Job, JobLogLine, JobState, Organization
from onwatch.deploys import caddy, procman, releases, services, svcusers, switch
from onwatch.deploys.models import (
    Deploy,
    Pipeline,
    Release,
    ReleaseState,
    Service,
    State,
    Watch,
)
from onwatch.deploys.switch import Machine
from tests.support.backups import alerts_titled
from tests.support.deploys import beside_a_writer, commit, dead_deploy
from tests.support.fixtures import signed_in
from tests.support.load import Load, fetch
from tests.support.receivers import wait_until
from tests.support.releases import KINDS, RELEASE_FAILS, app_files, built_marker
from tests.support.several import ready_host
from tests.support.switching import QUICK_GATE, listen_port

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
]


def deployed(service: Service) -> Deploy:
    """Run what is queued (a pipeline, then the deploy that waited for it)."""
    jobs.run_pending(kinds=KINDS)
    deploy = service.deploys.order_by("-pk").first()
    assert deploy is not None
    pipeline = deploy.pipeline
    # A deploy waits for its pipeline: one that did not pass cancels it (say why).
    assert pipeline is None or pipeline.state == "succeeded", (pipeline.state, pipeline.reason)
    return deploy


def push_and_deploy(service: Service, repo: Path, version: str, **files: str) -> Deploy:
    commit(repo, app_files(version, **files), f"Version {version}")
    services.run_pipeline(service, SYSTEM, "cli")
    return deployed(service)


def answers(machine: Machine, times: int = 5) -> set[str]:
    return {fetch(listen_port(machine), "shop.test")[1] for _ in range(times)}


def releases_log(service: Service) -> list[str]:
    """The versions the service's release commands migrated, deploy after deploy."""
    jobs_ = list(service.deploys.values_list("job_id", flat=True))
    found = JobLogLine.objects.filter(job_id__in=jobs_).order_by("pk")
    lines = found.values_list("text", flat=True)
    return [line.split()[1] for line in lines if line.startswith("migrated ")]


def test_a_green_pipeline_deploys_and_the_next_one_switches_under_load_with_no_failure(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    first = deployed_after_pipeline(shop)
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    assert answers(machine) == {"v1"}
    load = Load(listen_port(machine), "shop.test").start()
    try:
        second = push_and_deploy(shop, tmp_path / "repo", "v2")
    finally:
        tally = load.stop()
    assert second.state == State.SUCCEEDED, (second.reason, second.steps)
    assert tally.failed == 0, tally.errors
    assert {"v1", "v2"} <= set(tally.answers) and tally.ok > 50
    assert answers(machine) == {"v2"}
    # Each release is built once into a folder of its own, its release command run once.
    assert releases_log(shop) == ["v1", "v2"]
    release = second.release
    assert release is not None and release.state == ReleaseState.READY
    assert built_marker(release.directory).exists()
    assert release.directory != first.release.directory  # type: ignore[union-attr]
    # The timeline: what ran, in order, each ended ok with its time.
    names = [s["name"] for s in second.steps]
    assert names == [
        "checkout",
        "read onwatch.toml",
        "build",
        "release command",
        "prepare Caddy",
        "start",
        "health gate",
        "switch",
        "drain",
    ]
    assert all(s["ok"] and s["seconds"] is not None for s in second.steps), second.steps
    assert second.live_after == release.label


def deployed_after_pipeline(service: Service) -> Deploy:
    pipeline = services.run_pipeline(service, SYSTEM, "cli")
    deploy = service.deploys.get()
    assert deploy.pipeline == pipeline and deploy.state == State.QUEUED
    assert deploy.job is not None and deploy.job.after_id == pipeline.job_id
    return deployed(service)


def test_a_failing_release_command_leaves_the_old_release_serving(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    live = services.live_release(shop)
    failed = push_and_deploy(shop, tmp_path / "repo", "v2", release=RELEASE_FAILS)
    assert failed.state == State.FAILED
    assert failed.reason == (
        "the release command exited with 3: $ echo migration 0003 cannot add the column "
        f">&2; exit 3 | migration 0003 cannot add the column; {live} still serves shop.test"
    )
    assert [s["name"] for s in failed.steps][-1] == "release command"
    assert not failed.steps[-1]["ok"]
    assert answers(machine) == {"v1"} and failed.live_after == str(live)
    assert failed.release is not None and failed.release.state == ReleaseState.FAILED
    [alert] = alerts_titled(f"Deploy #{failed.pk} of shop failed")
    assert f"What serves shop.test now: {live}" in alert.body


def test_a_release_that_never_gets_healthy_is_stopped_and_the_old_one_serves(
    machine: Machine, shop: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    monkeypatch.setattr(releases, "GATE", replace(QUICK_GATE, seconds=4))
    failed = push_and_deploy(shop, tmp_path / "repo", "v2", health="fail")
    assert failed.state == State.FAILED
    assert "never answered 200 3 times in a row on /health within 4 s" in failed.reason
    assert failed.reason.endswith(f"{services.live_release(shop)} still serves shop.test")
    assert answers(machine) == {"v1"}
    # Its release command ran (before traffic could move), its process is gone.
    assert releases_log(shop) == ["v1", "v2"]
    assert len([s for s in machine.supervisor.all() if s.name.startswith("slot-")]) == 1


def test_rollback_brings_back_the_previous_release_without_a_rebuild(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    first = deployed_after_pipeline(shop)
    push_and_deploy(shop, tmp_path / "repo", "v2")
    assert answers(machine) == {"v2"}
    load = Load(listen_port(machine), "shop.test").start()
    started = time.monotonic()
    try:
        rollback = services.queue_rollback(shop, SYSTEM, "cli")
        jobs.run_pending(kinds=KINDS)
        took = time.monotonic() - started
    finally:
        tally = load.stop()
    rollback.refresh_from_db()
    assert rollback.state == State.SUCCEEDED, (rollback.reason, rollback.steps)
    assert rollback.release == first.release
    assert tally.failed == 0, tally.errors
    assert answers(machine) == {"v1"}
    # No checkout, no build, no release command: the kept folder was started again.
    assert [s["name"] for s in rollback.steps] == [
        "prepare Caddy",
        "start",
        "health gate",
        "switch",
        "drain",
    ]
    assert releases_log(shop) == ["v1", "v2"]
    assert services.live_release(shop) == first.release
    # The figure, with -s: the whole job, and until the kept release took requests.
    live_in = sum(s["seconds"] for s in rollback.steps[:4])
    print(f"rollback took {took:.2f} s; the old release took requests after {live_in:.2f} s")
    assert AuditEntry.objects.filter(action="rollback-queued").count() == 1


def test_no_rollback_past_a_marked_release_refuses_and_says_why(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    deployed_after_pipeline(shop)
    second = push_and_deploy(shop, tmp_path / "repo", "v2")
    assert second.release is not None
    services.mark_no_rollback_past(second.release, "drops the old orders table", SYSTEM)
    with pytest.raises(services.Refusal) as refused:
        services.queue_rollback(shop, SYSTEM, "cli")
    assert str(refused.value) == (
        f"Cannot roll back to {Release.objects.order_by('pk').first()}: {second.release} is "
        'marked "no rollback past this" (drops the old orders table); older code may not '
        "run on the data it changed. Deploy a fixed commit instead."
    )
    assert not shop.deploys.filter(kind="rollback").exists()
    assert answers(machine) == {"v2"}


def test_old_releases_are_pruned_but_never_the_live_or_previous_one(
    machine: Machine, shop: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "KEEP_RELEASES", 1)
    first = deployed_after_pipeline(shop)
    second = push_and_deploy(shop, tmp_path / "repo", "v2")
    # Back to the first: the live one is now the oldest, the second was live before it.
    services.queue_rollback(shop, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    assert answers(machine) == {"v1"}
    third = push_and_deploy(shop, tmp_path / "repo", "v3")
    assert third.state == State.SUCCEEDED
    kept = {r.pk: r.state for r in shop.releases.all()}
    # Keep 1: the third (live); the first was live before it; the second goes.
    assert kept == {
        first.release.pk: ReleaseState.READY,  # type: ignore[union-attr]
        second.release.pk: ReleaseState.PRUNED,  # type: ignore[union-attr]
        third.release.pk: ReleaseState.READY,  # type: ignore[union-attr]
    }
    assert not Path(second.release.directory).exists()  # type: ignore[union-attr]
    assert Path(first.release.directory).is_dir()  # type: ignore[union-attr]
    with pytest.raises(services.Refusal, match="it is pruned"):
        services.queue_rollback(shop, SYSTEM, "cli", to=second.release.pk)  # type: ignore[union-attr]


def test_a_deploy_whose_worker_died_ends_interrupted_with_the_live_release_serving(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    live = services.live_release(shop)
    commit(tmp_path / "repo", app_files("v2"), "Version v2")
    deploy = dead_deploy(shop)  # its worker stopped answering (killed, machine down)
    [reaped] = jobs.reap_expired()
    deploy.refresh_from_db()
    assert (reaped.pk, reaped.state) == (deploy.job_id, JobState.INTERRUPTED)
    assert deploy.state == State.INTERRUPTED
    assert deploy.reason == (
        "onwatch stopped while the deploy ran (its worker stopped answering); deploy again; "
        f"{live} still serves shop.test"
    )
    assert answers(machine) == {"v1"} and deploy.live_after == str(live)
    [alert] = alerts_titled(f"Deploy #{deploy.pk} of shop was interrupted")
    assert "What to do:" in alert.body
    # A rerun continues cleanly.
    again = services.queue_deploy(shop, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    again.refresh_from_db()
    assert again.state == State.SUCCEEDED, again.reason
    assert answers(machine) == {"v2"}


def test_a_second_deploy_of_a_service_waits_for_the_first(machine: Machine, shop: Service) -> None:
    deploy = services.queue_deploy(shop, SYSTEM, "cli")
    assert deploy.job is not None
    waiting = "waiting for another deploy of this service to finish"
    with holding_the_deploy_lock(machine, shop):
        # Another deploy of the service (another worker) holds it: this one goes back to
        # the queue, not started, with no attempt counted, and says so once.
        for _ in range(2):
            jobs.run_pending(kinds=KINDS)
            Job.objects.filter(pk=deploy.job.pk).update(run_after=timezone.now())
        job = Job.objects.get(pk=deploy.job.pk)
        assert (job.state, job.attempts, job.error) == (JobState.QUEUED, 0, waiting)
        assert log_text(deploy.job_id).count(waiting) == 1
        deploy.refresh_from_db()
        assert (deploy.state, deploy.steps) == (State.QUEUED, [])
    jobs.run_pending(kinds=KINDS)
    deploy.refresh_from_db()
    assert deploy.state == State.SUCCEEDED, deploy.reason
    assert answers(machine) == {"v1"}


@contextmanager
def holding_the_deploy_lock(machine: Machine, service: Service) -> Iterator[None]:
    """As a deploy of the service that another worker runs holds it."""
    lock = machine.root / "locks" / f"service-{service.pk}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def test_a_waiting_deploy_leaves_the_real_workers_pipeline_slot_to_pipelines(
    machine: Machine, shop: Service, org: Organization, tmp_path: Path
) -> None:
    assert settings.JOB_QUEUES["pipelines"] == 1  # the default: one at a time
    commit(tmp_path / "other", app_files("o1"), "Other service")
    other = services.add_service(
        org, services.ServiceFields(name="other", git_url=str(tmp_path / "other")), SYSTEM
    )
    stopper = loops.Stopper()
    worker = threading.Thread(target=loops.run_worker, args=(stopper,))
    try:
        with holding_the_deploy_lock(machine, shop):
            deploy = services.queue_deploy(shop, SYSTEM, "cli")
            worker.start()
            waiting = "waiting for another deploy of this service to finish"
            wait_until(lambda: waiting in log_text(deploy.job_id), 60, "the deploy to wait")
            # Its slot is free while it waits: a pipeline queued after it runs to its end.
            pipeline = beside_a_writer(lambda: services.run_pipeline(other, SYSTEM, "cli"))
            wait_until(lambda: ended(pipeline), 180, "the pipeline")
            pipeline.refresh_from_db()
            assert pipeline.state == State.SUCCEEDED, pipeline.reason
            assert beside_a_writer(lambda: Deploy.objects.get(pk=deploy.pk).state) == State.QUEUED
        # The other deploy ended: this one starts within seconds, on the same worker.
        wait_until(lambda: ended(deploy), 180, "the deploy")
    finally:
        stopper.halt()
        worker.join(timeout=120)
    deploy.refresh_from_db()
    assert deploy.state == State.SUCCEEDED, deploy.reason
    assert answers(machine) == {"v1"}


def ended(row: Deploy | Pipeline) -> bool:
    found = beside_a_writer(lambda: type(row).objects.filter(pk=row.pk).first())
    return found is not None and found.state not in (State.QUEUED, State.RUNNING)


def log_text(job_id: int | None) -> str:
    assert job_id is not None, "no job"
    lines = beside_a_writer(
        lambda: list(JobLogLine.objects.filter(job_id=job_id).values_list("text", flat=True))
    )
    return "\n".join(lines)


# A slow migration with a grandchild: a shell it started that sleeps on its own. What it
# prints ("migrating 1001") is not in the command line, which the log shows first.
# Its sleeps are this process's own (GNU sleep takes fractions): another worker, or the other
# pass, may run these tests at the same moment, and sleeping() looks at the whole machine.
OWN = f".{os.getpid()}"
SLOW_RELEASE = f"sh -c 'sleep 4321{OWN}' & echo migrating $((1000 + 1)); sleep 4322{OWN}"


def test_a_deploy_cancelled_mid_release_command_ends_cancelled_with_the_old_one_serving(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    commit(tmp_path / "repo", app_files("v2", release=SLOW_RELEASE), "Slow migration")
    deploy = services.queue_deploy(shop, SYSTEM, "cli")
    worker = threading.Thread(target=jobs.run_pending, kwargs={"kinds": KINDS})
    started = time.monotonic()
    worker.start()
    # Its lines reach the deploy's log while it runs, not when it ends.
    wait_until(lambda: "migrating 1001" in log_text(deploy.job_id), 60, "the release command")
    wait_until(lambda: sleeping() == {f"sleep 4321{OWN}", f"sleep 4322{OWN}"}, 30, "its processes")
    job = deploy.job
    assert job is not None
    beside_a_writer(lambda: jobs.cancel(job, "test"))
    worker.join(timeout=60)
    deploy.refresh_from_db()
    assert (deploy.state, deploy.reason) == (State.CANCELLED, "cancelled")
    assert time.monotonic() - started < 50  # the release command was stopped, not waited for
    assert sleeping() == set()  # its whole tree is gone, the grandchild too
    assert answers(machine) == {"v1"}
    assert not [a for a in alerts_titled(f"#{deploy.pk} of shop")]


def sleeping() -> set[str]:
    """The slow release command's processes still running on this machine."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        ours = [f"{n}{OWN}".encode() for n in (4321, 4322, 41, 42)]
        if argv[:1] == [b"sleep"] and argv[1:2] in [[n] for n in ours]:
            found.add(" ".join(a.decode() for a in argv[:2]))
    return found


LIMITED_RELEASE = SLOW_RELEASE.replace("4321.", "41.").replace("4322.", "42.")


def test_a_release_command_over_its_time_limit_is_stopped_with_its_children(
    machine: Machine, shop: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    live = services.live_release(shop)
    monkeypatch.setattr(releases, "RELEASE_COMMAND_SECONDS", 3)
    started = time.monotonic()
    failed = push_and_deploy(shop, tmp_path / "repo", "v2", release=LIMITED_RELEASE)
    # Not held up by the grandchild, which is stopped with the rest.
    assert time.monotonic() - started < 30
    assert failed.state == State.FAILED
    assert failed.reason.startswith(
        "the release command stopped after 3 s, the step's time limit; its last lines show "
        "where it hung"
    ), failed.reason
    assert "migrating 1001" in failed.reason
    assert failed.reason.endswith(f"{live} still serves shop.test")
    assert sleeping() == set()
    assert answers(machine) == {"v1"}


PROBE = (
    "id -u; cat {key} || echo the key file is out of reach; "
    "ls {data} || echo the data directory is out of reach"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs releases as another user")
def test_the_release_command_and_the_web_process_run_as_the_services_user_away_from_onwatchs_files(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    probe = PROBE.format(key=settings.KEY_FILE, data=settings.DATA_DIR)
    # The release command reaches a server on this machine's loopback, as a database.
    database = socket.create_server(("127.0.0.1", 0))
    reach = f"; echo > /dev/tcp/127.0.0.1/{database.getsockname()[1]} && echo reached it"
    files = app_files("v1", release=probe + reach)
    files["onwatch.toml"] = files["onwatch.toml"].replace(
        'command = "RELEASE=', f'command = "{probe}; RELEASE='
    )
    commit(tmp_path / "repo", files, "Probe")
    with database:
        deploy = deployed_after_pipeline(shop)
    assert "reached it" in log_text(deploy.job_id).splitlines()
    # The web process read its own release folder (its VERSION, its app) and serves.
    assert deploy.state == State.SUCCEEDED, (deploy.reason, deploy.steps)
    assert answers(machine) == {"v1"}
    step_uid = str(pwd.getpwnam(svcusers.name_of(shop.pk)).pw_uid)  # the service's own
    key = settings.KEY_FILE.read_text()
    [slot] = [s.name for s in machine.supervisor.all() if s.name.startswith("slot-")]
    web = machine.supervisor.log_of(slot).read_text()
    for said in (log_text(deploy.job_id), web):
        lines = said.splitlines()
        assert step_uid in lines and "0" not in lines
        assert "the key file is out of reach" in lines
        assert "the data directory is out of reach" in lines
        assert key.strip() not in said


def test_deleting_a_service_stops_its_release_and_takes_its_domain_off(
    machine: Machine, shop: Service
) -> None:
    first = deployed_after_pipeline(shop)
    assert first.release is not None and Path(first.release.directory).is_dir()
    services.delete_service(shop, "shop", SYSTEM)
    assert [s.name for s in machine.supervisor.all() if s.name.startswith("slot-")] == []
    assert not Path(first.release.directory).exists()
    assert [s.domain for s in machine.caddy.sites()] == []
    with pytest.raises(OSError):
        fetch(listen_port(machine), "shop.test")


def test_an_old_release_that_cannot_be_stopped_leaves_a_succeeded_deploy_with_a_warning(
    machine: Machine,
    shop: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    members: dict[str, Any],
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    [old_port] = [p for p in shop.slot_ports if machine.caddy.live_label(p)]
    old_program = switch.program_name(old_port)
    real_remove = procman.Supervisor.remove

    def remove(supervisor: procman.Supervisor, name: str) -> None:
        if name == old_program:  # the fault: supervisord stops answering just then
            raise procman.ProcmanError(f"supervisord does not answer on {supervisor.socket}")
        real_remove(supervisor, name)

    monkeypatch.setattr(procman.Supervisor, "remove", remove)
    second = push_and_deploy(shop, tmp_path / "repo", "v2")
    live = services.live_release(shop)
    assert second.state == State.SUCCEEDED, (second.reason, second.steps)
    assert live == second.release and second.live_after == str(live)
    assert answers(machine) == {"v2"}
    assert second.reason.startswith(f"{live} serves shop.test, but ")
    assert f"on port {old_port} could not be stopped (supervisord does not answer" in second.reason
    assert "it gets no new requests but may still run" in second.reason
    assert [(s["name"], s["ok"]) for s in second.steps][-2:] == [("switch", True), ("drain", False)]
    [alert] = alerts_titled(f"Deploy #{second.pk} of shop succeeded with a warning")
    assert second.reason in alert.body and "What to do:" in alert.body
    page = signed_in(members["viewer"]).get(f"/deploys/{second.pk}/").content.decode()
    assert html.escape(second.reason) in page
    # Once supervisord answers again, the next deploy stops what was left.
    monkeypatch.setattr(procman.Supervisor, "remove", real_remove)
    third = push_and_deploy(shop, tmp_path / "repo", "v3")
    assert (third.state, third.reason) == (State.SUCCEEDED, "")
    assert len([s for s in machine.supervisor.all() if s.name.startswith("slot-")]) == 1
    assert answers(machine) == {"v3"}


def test_a_new_domain_takes_the_live_release_along_and_later_deploys_work(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    first = deployed_after_pipeline(shop)
    assert first.state == State.SUCCEEDED, first.reason
    services.set_domain(shop, "new-shop.test", True, SYSTEM)
    # The same slots, now under the new domain alone: what served goes on serving.
    assert machine.caddy.sites() == [
        caddy.Site("new-shop.test", (shop.slot_ports[0], shop.slot_ports[1]), "/health")
    ]
    assert fetch(listen_port(machine), "new-shop.test") == (200, "v1")
    assert fetch(listen_port(machine), "shop.test")[1] != "v1"
    second = push_and_deploy(shop, tmp_path / "repo", "v2")
    assert second.state == State.SUCCEEDED, second.reason
    assert {fetch(listen_port(machine), "new-shop.test")[1] for _ in range(5)} == {"v2"}
    # Taken off, the site leaves Caddy; given a domain again, the live release is back.
    services.set_domain(shop, "", False, SYSTEM)
    assert machine.caddy.sites() == []
    services.set_domain(shop, "shop.test", True, SYSTEM)
    assert answers(machine) == {"v2"}


def test_the_domain_does_not_change_while_a_deploy_runs(machine: Machine, shop: Service) -> None:
    lock = machine.root / "locks" / f"service-{shop.pk}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a deploy of the service runs
        with pytest.raises(services.Refusal) as refused:
            services.set_domain(shop, "new-shop.test", True, SYSTEM)
    assert str(refused.value) == "A deploy of shop is starting; change the domain once it has ended"
    shop.refresh_from_db()
    assert shop.domain == "shop.test"
    assert AuditEntry.objects.filter(action="service-domain-set").count() == 1  # the fixture's


def test_the_hosts_do_not_change_while_a_deploy_holds_the_service(
    machine: Machine, shop: Service
) -> None:
    """A deploy takes the lock, then says it runs: between the two, a change of hosts
    once went through and the deploy read rows that had vanished."""
    chosen = [services.this_machine(shop.org), ready_host(shop.org)]
    lock = machine.root / "locks" / f"service-{shop.pk}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    deploy = services.queue_deploy(shop, SYSTEM, "cli")
    said = []
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # taken; its row still says queued
        for start in (False, True):
            if start:
                services.deploy_started(deploy)
            with pytest.raises(services.Refusal) as refused:
                services.set_service_hosts(shop, chosen, SYSTEM)
            said.append(str(refused.value))
        services.deploy_ended(deploy, State.SUCCEEDED, "", "")
        # The watch of a deploy that ended holds the lock a moment at each look.
        Watch.objects.create(deploy=deploy, until=timezone.now(), upstream="127.0.0.1:9")
        with pytest.raises(services.Refusal) as refused:
            services.set_service_hosts(shop, chosen, SYSTEM)
        said.append(str(refused.value))
    assert said == [
        "A deploy of shop is starting; change its hosts once it has ended",
        f"Deploy #{deploy.pk} of shop is running; change its hosts once it has ended (or "
        "cancel it on its page)",
        f"The watch of deploy #{deploy.pk} of shop is reading its hosts at this moment; change "
        "its hosts again in a few seconds",
    ]
    assert services.placements(shop) == []
    assert not AuditEntry.objects.filter(action="service-hosts-set").exists()


def test_deleting_a_service_while_supervisord_is_down_still_stops_its_release(
    machine: Machine, shop: Service
) -> None:
    first = deployed_after_pipeline(shop)
    assert first.state == State.SUCCEEDED, first.reason
    machine.supervisor.shutdown()  # supervisord, Caddy and the release all stopped
    assert not machine.supervisor.answers()
    services.delete_service(shop, "shop", SYSTEM)
    # supervisord and Caddy were started again to remove the service from both.
    assert machine.supervisor.answers()
    assert [s.name for s in machine.supervisor.all() if s.name.startswith("slot-")] == []
    assert not any(machine.supervisor.has(switch.program_name(p)) for p in shop.slot_ports)
    assert [s.domain for s in machine.caddy.sites()] == []
    assert all(machine.caddy.live_label(p) is None for p in shop.slot_ports)
    with pytest.raises(OSError):
        fetch(listen_port(machine), "shop.test")


def test_deleting_a_service_is_refused_while_caddy_cannot_start(
    machine: Machine, shop: Service
) -> None:
    assert deployed_after_pipeline(shop).state == State.SUCCEEDED
    machine.supervisor.shutdown()
    with socket.socket() as taken:
        # The fault: another program holds the port Caddy needs, so it cannot start.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", machine.options.health_port))
        taken.listen()
        with pytest.raises(services.Refusal) as refused:
            services.delete_service(shop, "shop", SYSTEM)
    message = str(refused.value)
    assert message.startswith(
        "shop's releases could not be stopped and its domain taken off Caddy: Caddy did not"
    )
    assert message.endswith("; when that works again, delete it again") and "\n" not in message
    # Nothing was deleted: the service, its site and its release are all still there.
    assert Service.objects.filter(pk=shop.pk).exists()
    assert [s.domain for s in machine.caddy.sites()] == ["shop.test"]
    # With the port free again, the delete goes through.
    services.delete_service(shop, "shop", SYSTEM)
    assert [s.domain for s in machine.caddy.sites()] == []
    assert not Service.objects.filter(pk=shop.pk).exists()
