"""A service on several hosts, all or nothing, with real components: two places on this
machine (each its own supervisord and Caddy, tests/support/several.py) stand for two hosts;
a real pipeline and build, the switch app behind both Caddies, clients sending requests
without pause through the first while the deploy goes through them in turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest
from django.utils import timezone

from onwatch.alerts.models import Delivery
from onwatch.core import jobs, scheduler
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobLogLine, JobState, Organization
from onwatch.deploys import api, deploy_views, places, releases, services, switch
from onwatch.deploys.models import Deploy, Host, Service, State, Watch
from onwatch.deploys.releases import Target
from onwatch.deploys.switch import Machine
from onwatch.uptime import heartbeats, pings
from onwatch.uptime.models import Kind, Monitor, Ping
from onwatch.uptime.models import State as MonitorState
from onwatch.uptime.pings import Received
from tests.support.backups import alerts_titled
from tests.support.deploys import commit
from tests.support.load import Load, Tally, fetch
from tests.support.releases import KINDS, app_files, run_in_thread
from tests.support.several import (
    SSH_HOST,
    Failing,
    checked_ssh_host,
    ready_host,
    ssh_places,
    two_places,
)
from tests.support.ssh_hosts import ssh_host
from tests.support.switching import QUICK_GATE, listen_port, own_machine

pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
]


@pytest.fixture
def other() -> Iterator[Machine]:
    """The second host's supervisord and Caddy."""
    with own_machine() as m:
        yield m


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch, machine: Machine, other: Machine) -> Failing:
    chosen = Failing()
    two_places(monkeypatch, other, chosen)
    monkeypatch.setattr(releases, "GATE", replace(QUICK_GATE, seconds=4))
    return chosen


@pytest.fixture
def on_two(org: Organization, shop: Service, failing: Failing) -> Service:
    """The shop on this machine first, then on the SSH host."""
    chosen = [services.this_machine(org), ready_host(org)]
    services.set_service_hosts(shop, chosen, SYSTEM)
    return shop


def deployed(service: Service, repo: Path, version: str) -> Deploy:
    commit(repo, app_files(version), f"Version {version}")
    services.run_pipeline(service, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    deploy = service.deploys.order_by("-pk").first()
    assert deploy is not None
    return deploy


def answers(machine: Machine) -> set[str]:
    return {fetch(listen_port(machine), "shop.test")[1].split()[0] for _ in range(5)}


def migrated(service: Service) -> list[str]:
    """The versions the service's release commands migrated, deploy after deploy."""
    found = JobLogLine.objects.filter(job_id__in=service.deploys.values_list("job_id"))
    texts = found.order_by("pk").values_list("text", flat=True)
    # A host's lines are its name in brackets, then what it said.
    said = [t.split("] ", 1)[-1] for t in texts]
    return [t.split()[1] for t in said if t.startswith("migrated ")]


def figures(what: str, deploy: Deploy, tally: Tally) -> str:
    """With -s: the requests through the first host's Caddy while the deploy went there,
    back, and failed; how long it took, and how long the first host's going back took."""
    back = [s["seconds"] for s in deploy.steps if s["name"].startswith("switch back on")]
    return (
        f"{what}: {tally.ok + tally.failed} requests, {tally.failed} failed, "
        f"{tally.answers['v2']} from the new release before it went back; the deploy took "
        f"{deploy.seconds:.1f} s, going back {sum(back):.1f} s"
    )


def names(deploy: Deploy) -> list[str]:
    return [s["name"] for s in deploy.steps]


def test_a_deploy_goes_to_each_host_in_turn_and_migrates_once(
    on_two: Service, machine: Machine, other: Machine, tmp_path: Path
) -> None:
    first = deployed(on_two, tmp_path / "repo", "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    assert answers(machine) == answers(other) == {"v1"}
    # The SSH host's slot ports were asked of it on this first deploy, and are kept.
    [placement] = [p for p in services.placements(on_two) if not p.host.local]
    assert len(placement.slot_ports) == 2 and set(placement.slot_ports) != set(on_two.slot_ports)
    load = Load(listen_port(machine), "shop.test").start()
    try:
        second = deployed(on_two, tmp_path / "repo", "v2")
    finally:
        tally = load.stop()
    assert second.state == State.SUCCEEDED, (second.reason, second.steps)
    assert answers(machine) == answers(other) == {"v2"}
    assert tally.failed == 0, tally.errors
    assert {"v1", "v2"} <= set(tally.answers)
    # Built once here, migrated once (on the first host), before any traffic moved.
    assert migrated(on_two) == ["v1", "v2"]
    here, there = "on this machine", f"on {SSH_HOST}"
    assert names(second) == [
        "checkout",
        "read onwatch.toml",
        f"build {here}",
        f"release command {here}",
        *(f"{n} {here}" for n in ("prepare Caddy", "start", "health gate", "switch", "drain")),
        *(f"{n} {there}" for n in ("prepare Caddy", "start", "health gate", "switch", "drain")),
    ]
    assert all(s["ok"] for s in second.steps), second.steps
    assert second.live_after == str(second.release)
    assert releases.serving(on_two) == str(second.release)
    # What users felt is summed over both switches (this machine's load, the other's none).
    assert second.switch_served is not None and second.switch_served >= tally.ok // 10
    assert second.switch_failed == 0


def test_the_second_hosts_gate_failing_sends_the_first_back_with_no_failed_request(
    on_two: Service, machine: Machine, other: Machine, failing: Failing, tmp_path: Path
) -> None:
    first = deployed(on_two, tmp_path / "repo", "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    failing.there.add("v2")
    load = Load(listen_port(machine), "shop.test").start()
    try:
        failed = deployed(on_two, tmp_path / "repo", "v2")
    finally:
        tally = load.stop()
    assert failed.state == State.FAILED
    v1 = str(first.release)
    assert failed.reason.startswith(f"on {SSH_HOST}: {failed.release} never answered 200 3 times")
    assert failed.reason.endswith(
        f"switched back on this machine; what serves now: {v1} on every host "
        f"(this machine, {SSH_HOST})"
    ), failed.reason
    # v2 served through this machine's Caddy until it went back; nobody got an error.
    assert answers(machine) == answers(other) == {"v1"}
    assert tally.failed == 0, tally.errors
    assert tally.answers["v2"] > 0 and tally.answers["v1"] > 0
    print(figures("two places on this machine, the second's gate failing", failed, tally))
    back = [s for s in failed.steps if s["name"] == "switch back on this machine"]
    assert len(back) == 1 and back[0]["ok"], failed.steps
    assert back[0]["detail"] == f"{v1} serves on this machine again"
    assert failed.live_after == v1 and services.live_release(on_two) == first.release
    [alert] = alerts_titled(f"Deploy #{failed.pk} of shop failed")
    assert f"What serves shop.test now: {v1}" in alert.body
    # The release command ran once, on the first host, before any traffic moved.
    assert migrated(on_two) == ["v1", "v2"]


def test_going_back_gives_each_host_the_health_path_of_the_release_serving_there(
    on_two: Service, machine: Machine, other: Machine, failing: Failing, tmp_path: Path
) -> None:
    """Caddy asks the live release the health path "prepare Caddy" set for the new one: a
    host switched back (and the one whose gate failed) must ask the old release its own,
    or a release answering 404 on the new path is taken for down."""
    files = app_files("v1")
    files["onwatch.toml"] = files["onwatch.toml"].replace('path = "/health"', 'path = "/v1"')
    commit(tmp_path / "repo", files, "Version v1, with a health path of its own")
    services.run_pipeline(on_two, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    first = on_two.deploys.order_by("-pk").first()
    assert first is not None and first.state == State.SUCCEEDED, first
    failing.there.add("v2")  # its /health answers 500 on the second host
    failed = deployed(on_two, tmp_path / "repo", "v2")
    assert failed.state == State.FAILED, (failed.reason, failed.steps)
    assert failed.reason.endswith(f"on every host (this machine, {SSH_HOST})"), failed.reason
    for place in (machine, other):
        [site] = [s for s in place.caddy.sites() if s.domain == "shop.test"]
        assert site.health_path == "/v1", place.root


def test_a_host_failing_at_its_turn_sends_the_first_back(
    on_two: Service, machine: Machine, failing: Failing, tmp_path: Path
) -> None:
    first = deployed(on_two, tmp_path / "repo", "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    failing.gone = True
    failed = deployed(on_two, tmp_path / "repo", "v2")
    assert failed.state == State.FAILED
    assert failed.reason.startswith(f"on {SSH_HOST}: "), failed.reason
    assert "switched back on this machine; what serves now: " in failed.reason
    assert answers(machine) == {"v1"}
    assert [s["name"] for s in failed.steps if not s["ok"]] == [f"prepare Caddy on {SSH_HOST}"]
    assert [s["ok"] for s in failed.steps if s["name"] == "switch back on this machine"] == [True]
    # What each host says is shown (this stand-in for a gone host reads no slot files: it
    # says nothing serves there), never hidden behind the release that serves here.
    assert failed.live_after == f"{first.release} on this machine, nothing on {SSH_HOST}"


class Killed(BaseException):
    """The worker's death, as near as one process plays it: none of the deploy's own
    handling of a failure runs after it."""


def killed(*args: object, **kwargs: object) -> NoReturn:
    raise Killed


def killed_between_two_hosts(
    service: Service, monkeypatch: pytest.MonkeyPatch, repo: Path
) -> tuple[Deploy, Deploy]:
    """v1 on both places, then a deploy of v2 whose worker dies between them (this machine
    switched, the other not yet), its lease run out: the first deploy and this one."""
    first = deployed(service, repo, "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    made = releases.place_for

    def dying_there(host: Host) -> places.Place:
        place = made(host)
        if not host.local:
            monkeypatch.setattr(place, "switch", killed)
        return place

    monkeypatch.setattr(releases, "place_for", dying_there)
    commit(repo, app_files("v2"), "Version v2")
    services.run_pipeline(service, SYSTEM, "cli")
    with pytest.raises(Killed):
        jobs.run_pending(kinds=KINDS)
    monkeypatch.setattr(releases, "place_for", made)
    deploy = service.deploys.order_by("-pk").first()
    assert deploy is not None and deploy.state == State.RUNNING
    assert deploy.job_id is not None
    Job.objects.filter(pk=deploy.job_id).update(lease_until=timezone.now() - timedelta(minutes=1))
    return first, deploy


def overdue_heartbeat(org: Organization) -> Monitor:
    """A heartbeat whose ping is ten minutes late: the next tick must fail it."""
    monitor = Monitor.objects.create(
        org=org, name="nightly", kind=Kind.HEARTBEAT, config=heartbeats.validate({"period": 60})
    )
    found = pings.find(monitor.ping_id)
    assert found is not None
    pings.record(found, Received(type=Ping.Type.SUCCESS), timezone.now() - timedelta(hours=2))
    return monitor


def test_a_worker_killed_between_two_hosts_leaves_no_mix_once_it_is_found(
    org: Organization,
    on_two: Service,
    machine: Machine,
    other: Machine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    first, deploy = killed_between_two_hosts(on_two, monkeypatch, tmp_path / "repo")
    assert answers(machine) == {"v2"} and answers(other) == {"v1"}  # what the kill left
    # The reaper, in the scheduler's tick, only ends the deploy and queues its going back
    # (once, however often it comes by): switching hosts back would hold the tick.
    scheduler.tick()
    scheduler.tick()
    deploy.refresh_from_db()
    [going] = Job.objects.filter(kind=services.GOING_BACK_KIND)
    assert (going.state, going.queue, going.payload["deploy"]) == ("queued", "pipelines", deploy.pk)
    assert deploy.state == State.INTERRUPTED
    assert deploy.reason.endswith(f"checking its hosts for a mix of releases (job #{going.pk})")
    assert answers(machine) == {"v2"}
    # Told at once, not when the job runs (it may wait behind a long pipeline), and once.
    [told] = alerts_titled(f"Deploy #{deploy.pk} of shop was interrupted")
    checking = f"onwatch is checking its hosts for a mix of releases (job #{going.pk})"
    assert told.body.splitlines()[0] == (
        "What is wrong: onwatch stopped while the deploy ran (its worker stopped answering); "
        + checking
    )
    assert told.body.splitlines()[2:] == [
        f"What serves shop.test now: unknown ({checking})",
        "What to do: nothing yet. onwatch is switching the hosts that took the new release "
        "back to what the others serve; you will hear again when that is done.",
        f"Details: http://localhost:8000/deploys/{deploy.pk}/",
    ]
    made = releases.place_for
    # Its own worker dies as it switches this machine back: the reaper queues it again.
    monkeypatch.setattr(
        releases, "place_for", lambda h: hold(made(h), killed) if h.local else made(h)
    )
    with pytest.raises(Killed):
        jobs.run_pending(kinds=[services.GOING_BACK_KIND])
    Job.objects.filter(pk=going.pk).update(lease_until=timezone.now() - timedelta(minutes=1))
    scheduler.tick()
    going.refresh_from_db()
    assert going.state == "queued" and "trying again" in going.error
    # The second attempt is held in its switch back while a heartbeat goes late: the tick
    # fails that heartbeat meanwhile, at once.
    reached, go = threading.Event(), threading.Event()

    def held_there(host: Host) -> places.Place:
        place = made(host)
        if not host.local:
            return place
        real = place.switch

        def switch_later(*args: Any, **kwargs: Any) -> switch.Switch:
            reached.set()
            assert go.wait(60)
            return real(*args, **kwargs)

        return hold(place, switch_later)

    monkeypatch.setattr(releases, "place_for", held_there)
    Job.objects.filter(pk=going.pk).update(run_after=timezone.now())
    claimed = jobs.claim("test-worker", [services.GOING_BACK_KIND])
    assert claimed is not None and claimed.pk == going.pk
    worker = run_in_thread(claimed)
    try:
        assert reached.wait(60), "the going back never reached its switch"
        late = overdue_heartbeat(org)
        began = time.monotonic()
        scheduler.tick()
        took = time.monotonic() - began
        assert Monitor.objects.get(pk=late.pk).state == MonitorState.DOWN
        assert Job.objects.get(pk=going.pk).state == "running"
        assert took < 5, f"the tick took {took:.1f} s while the going back ran"
    finally:
        go.set()
        worker.join(timeout=120)
    going.refresh_from_db()
    assert going.state == "succeeded", (going.error, going.log)
    deploy.refresh_from_db()
    assert answers(machine) == answers(other) == {"v1"}
    v1 = str(first.release)
    assert deploy.reason == (
        "onwatch stopped while the deploy ran (its worker stopped answering); "
        f"switched back on this machine; what serves now: {v1} on every host "
        f"(this machine, {SSH_HOST})"
    )
    assert deploy.live_after == v1
    [_, alert] = sorted(alerts_titled(f"Deploy #{deploy.pk} of shop was interrupted"), key=pk)
    assert alert.body.splitlines()[2:] == [
        f"What serves shop.test now: {v1}",
        f"What to do: nothing is urgent, {v1} serves on every host as before the deploy. "
        f"Deploy shop again to ship {deploy.release}: it was cut short, not refused.",
        f"Details: http://localhost:8000/deploys/{deploy.pk}/",
    ]
    assert not machine.caddy.counting("shop.test")
    # A rerun continues cleanly.
    monkeypatch.setattr(releases, "place_for", made)
    again = services.queue_deploy(on_two, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    again.refresh_from_db()
    assert again.state == State.SUCCEEDED, (again.reason, again.steps)
    assert answers(machine) == answers(other) == {"v2"}


def pk(delivery: Delivery) -> int:
    return delivery.pk


def hold(place: places.Place, switch_instead: Callable[..., object]) -> places.Place:
    vars(place)["switch"] = switch_instead
    return place


@pytest.mark.parametrize("end", ["was cancelled", "failed (OSError: no space left)"])
def test_a_going_back_cancelled_or_failing_at_once_says_nothing_was_made_sure_of(
    on_two: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, end: str
) -> None:
    _, deploy = killed_between_two_hosts(on_two, monkeypatch, tmp_path / "repo")
    jobs.reap_expired()
    [going] = Job.objects.filter(kind=services.GOING_BACK_KIND)
    if end == "was cancelled":
        jobs.cancel(going, "ana@example.com")
    else:  # before it could say anything (its kind is quiet: only the deploy tells)

        def no_lock(*args: object) -> Path:
            raise OSError("no space left")

        monkeypatch.setattr(releases, "deploy_lock", no_lock)
        jobs.run_pending(kinds=[services.GOING_BACK_KIND])
    deploy.refresh_from_db()
    assert deploy.state == State.INTERRUPTED
    assert deploy.reason == (
        "onwatch stopped while the deploy ran (its worker stopped answering); "
        f"going back on its hosts {end}, so whether they serve a mix of releases is "
        "not known: deploy shop again, which sets every host"
    )
    [_, alert] = sorted(alerts_titled(f"Deploy #{deploy.pk} of shop was interrupted"), key=pk)
    assert alert.body.splitlines()[2:] == [
        "What serves shop.test now: unknown (not checked after the interruption)",
        "What to do: deploy shop again, which sets every host to one release; until then "
        "users may get different releases from different hosts.",
        f"Details: http://localhost:8000/deploys/{deploy.pk}/",
    ]


def test_a_rollback_goes_back_on_every_host(
    on_two: Service, machine: Machine, other: Machine, tmp_path: Path
) -> None:
    first = deployed(on_two, tmp_path / "repo", "v1")
    assert deployed(on_two, tmp_path / "repo", "v2").state == State.SUCCEEDED
    load = Load(listen_port(other), "shop.test").start()
    try:
        rollback = services.queue_rollback(on_two, SYSTEM, "cli")
        jobs.run_pending(kinds=KINDS)
    finally:
        tally = load.stop()
    rollback.refresh_from_db()
    assert rollback.state == State.SUCCEEDED, (rollback.reason, rollback.steps)
    assert answers(machine) == answers(other) == {"v1"}
    assert tally.failed == 0, tally.errors
    # No build anywhere: the kept release started again on each host, in turn.
    assert [n for n in names(rollback) if n.startswith("start")] == [
        "start on this machine",
        f"start on {SSH_HOST}",
    ]
    assert not [n for n in names(rollback) if "build" in n or "release command" in n]
    assert releases.serving(on_two) == str(first.release)
    # Went live on each host in turn, each host's time on its switch step: the first's
    # is "went live", the last's when every host served it (the restore's true end).
    went = [datetime.fromisoformat(s["live_at"]) for s in rollback.steps if "live_at" in s]
    assert [s["name"] for s in rollback.steps if "live_at" in s] == [
        "switch on this machine",
        f"switch on {SSH_HOST}",
    ]
    assert rollback.switched_at == went[0] < went[1] == rollback.all_live_at
    said = api.DeployOut.model_validate(api.deploy_out(rollback))  # as the API says it
    assert said.all_live_at == went[1]
    assert [s.live_at for s in said.steps if s.live_at] == went
    later = (went[1] - went[0]).total_seconds()
    assert deploy_views.live_everywhere(rollback) == (
        f"on every host {later:.1f} s later, at {went[1]:%H:%M:%S} UTC"
    )
    assert migrated(on_two) == ["v1", "v2"]
    # A host's site cannot be moved through the seam: a new domain is refused, saying so.
    with pytest.raises(services.Refusal) as refused:
        services.set_domain(on_two, "shop2.test", True, SYSTEM)
    assert str(refused.value).startswith(f"shop runs on SSH hosts ({SSH_HOST}), where onwatch")
    # Moved to a host that serves nothing yet, it would stop everywhere before it
    # serves there: refused, saying how to move it.
    new = ready_host(on_two.org, "deploy@10.0.0.8")
    with pytest.raises(services.Refusal) as moved:
        services.set_service_hosts(on_two, [new], SYSTEM)
    assert str(moved.value) == (
        f"shop serves only on this machine, {SSH_HOST}, which this change would stop before "
        "any other host serves it: add the new hosts beside (onwatch services hosts shop "
        f"'this machine' '{SSH_HOST}' 'deploy@10.0.0.8'), deploy, then take this machine, "
        f"{SSH_HOST} off"
    )
    assert answers(machine) == answers(other) == {"v1"}
    # Taken off its hosts, the service stops there and serves here alone.
    services.set_service_hosts(on_two, [services.this_machine(on_two.org)], SYSTEM)
    assert answers(machine) == {"v1"}
    assert other.caddy.sites() == []
    assert not [s for s in other.supervisor.all() if s.name.startswith("slot-")]


def test_going_back_that_fails_is_said_loudly_with_what_serves_where(
    on_two: Service,
    machine: Machine,
    other: Machine,
    failing: Failing,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    first = deployed(on_two, tmp_path / "repo", "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    # v2 fails on the other host, and v1 no longer passes its gate here to come back.
    failing.there.add("v2")
    failing.here.add("v1")
    back = releases.Run.switch_back

    def cancelled_meanwhile(run: releases.Run, target: Target, before: str | None) -> str:
        # Someone cancels as it goes back: the worse news (a mix) must not read "cancelled".
        assert run.deploy.job is not None
        jobs.cancel(run.deploy.job, "ana")
        return back(run, target, before)

    monkeypatch.setattr(releases.Run, "switch_back", cancelled_meanwhile)
    failed = deployed(on_two, tmp_path / "repo", "v2")
    assert failed.state == State.FAILED
    v1, v2 = str(first.release), str(failed.release)
    mix = f"{v2} on this machine, {v1} on {SSH_HOST}"
    assert failed.reason.startswith(f"cancelled while it failed: on {SSH_HOST}: {v2} never")
    # The cancel reached the run: its job ended cancelled.
    assert failed.job is not None and failed.job.state == JobState.CANCELLED
    # Kept on for the watch at this machine's switch, Caddy's count stopped with the deploy.
    assert not machine.caddy.counting("shop.test")
    assert failed.reason.endswith(f"what serves now: {mix}"), failed.reason
    assert (
        f"going back failed (this machine: {v1} never answered 200 3 times in a row on "
        "/health within 4 s"
    ) in failed.reason
    assert answers(machine) == {"v2"} and answers(other) == {"v1"}
    assert releases.serving(on_two) == mix and failed.live_after == mix
    [alert] = alerts_titled(f"shop serves a mix of releases after deploy #{failed.pk}")
    assert f"What serves shop.test now: {mix}" in alert.body
    assert "onwatch rollback shop" in alert.body


def test_a_rollback_to_a_release_never_built_on_a_new_host_says_so(
    org: Organization, shop: Service, machine: Machine, tmp_path: Path
) -> None:
    """Refused when asked (it was queued, then failed on the host): nothing changes."""
    first = deployed(shop, tmp_path / "repo", "v1")
    assert deployed(shop, tmp_path / "repo", "v2").state == State.SUCCEEDED
    with ssh_host() as made:
        services.set_service_hosts(
            shop, [services.this_machine(org), checked_ssh_host(org, made)], SYSTEM
        )
        with pytest.raises(services.Refusal) as refused:
            services.queue_rollback(shop, SYSTEM, "cli")
    assert first.release is not None
    sha = first.release.commit[:7]
    assert str(refused.value) == (
        f"Cannot roll back to {first.release}: it was never built on {made.name}, which became "
        "a host of shop after it; to have its code live again, deploy its commit (Deploy this "
        f"commit {sha}, or onwatch deploy shop --commit {sha})"
    )
    assert not shop.deploys.filter(kind="rollback").exists()
    assert answers(machine) == {"v2"}


def test_two_ssh_hosts_one_failing_its_gate_sends_the_other_back(
    org: Organization,
    shop: Service,
    machine: Machine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """End to end: two real SSH hosts on loopback, each its agent, supervisord and Caddy;
    built on each, migrated once on the first, switched in turn, and sent back."""
    monkeypatch.setattr(releases, "GATE", replace(QUICK_GATE, seconds=4))
    failing: dict[str, set[str]] = {}
    cut: dict[str, set[str]] = {}
    ssh_places(monkeypatch, failing, cut)
    with ssh_host() as first, ssh_host() as second:
        rows = [checked_ssh_host(org, made) for made in (first, second)]
        services.set_service_hosts(shop, rows, SYSTEM)
        v1 = deployed(shop, tmp_path / "repo", "v1")
        assert v1.state == State.SUCCEEDED, (v1.reason, v1.steps)
        assert fetch(first.options.http_port, "shop.test")[1].split()[0] == "v1"
        assert fetch(second.options.http_port, "shop.test")[1].split()[0] == "v1"
        a, b = first.name, second.name
        assert names(v1)[:7] == [
            "checkout",
            "read onwatch.toml",
            f"send to {a}",
            f"send to {b}",
            f"build on {a}",
            f"build on {b}",
            f"release command on {a}",
        ]
        failing[b] = {"v2"}
        load = Load(first.options.http_port, "shop.test").start()
        try:
            v2 = deployed(shop, tmp_path / "repo", "v2")
        finally:
            tally = load.stop()
        ports = [made.options.http_port for made in (first, second)]
        served = {fetch(port, "shop.test")[1].split()[0] for port in ports}
        placed = {p.host.name: p.serving for p in services.placements(shop)}
        failing[b] = set()
        monkeypatch.setattr(services, "KEEP_RELEASES", 1)
        v3 = deployed(shop, tmp_path / "repo", "v3")
        # The same releases are kept on every host: v2 (failed) goes, v1 (live before) stays.
        kept = {
            (made.name, r.pk): bool(list(made.dir.rglob(f"releases/{shop.pk}/{r.pk}")))
            for made in (first, second)
            for r in (v1.release, v2.release)
            if r is not None
        }
        now = {fetch(port, "shop.test")[1].split()[0] for port in ports}
        # The second host goes away while v4 waits for its gate there.
        cut[b] = {"v4"}
        v4 = deployed(shop, tmp_path / "repo", "v4")
        after = {fetch(port, "shop.test")[1].split()[0] for port in ports}
        # The second host cannot be reached at all (its sshd stopped): its Caddy serves on.
        second.sshd.stop()
        v5 = deployed(shop, tmp_path / "repo", "v5")
        still = {fetch(port, "shop.test")[1].split()[0] for port in ports}
    assert v2.state == State.FAILED
    assert v2.reason.startswith(f"on {b}: {v2.release} never answered 200 3 times"), v2.reason
    assert v2.reason.endswith(
        f"switched back on {a}; what serves now: {v1.release} on every host ({a}, {b})"
    ), v2.reason
    assert served == {"v1"}
    assert tally.failed == 0, tally.errors
    assert tally.answers["v2"] > 0  # it served on the first host until it went back
    print(figures("two SSH hosts, the second's gate failing", v2, tally))
    assert migrated(shop) == ["v1", "v2", "v3", "v4"]  # once each, on the first host
    assert [s["ok"] for s in v2.steps if s["name"] == f"switch back on {a}"] == [True]
    assert placed == {a: str(v1.release), b: str(v1.release)}
    assert v3.state == State.SUCCEEDED, (v3.reason, v3.steps)
    assert now == {"v3"} and v3.live_after == str(v3.release)
    assert v1.release is not None and v2.release is not None
    assert kept == {
        (a, v1.release.pk): True,
        (a, v2.release.pk): False,
        (b, v1.release.pk): True,
        (b, v2.release.pk): False,
    }
    assert v4.state == State.FAILED
    assert v4.reason.startswith(f"{b} went away during the switch ("), v4.reason
    assert v4.reason.endswith(
        f"switched back on {a}, {b}; what serves now: {v3.release} on every host ({a}, {b})"
    ), v4.reason
    assert after == {"v3"}
    backs = {s["name"]: (s["ok"], s["detail"]) for s in v4.steps if "back" in s["name"]}
    assert backs == {
        f"switch back on {b}": (True, f"{v3.release} still serves on {b}"),
        f"switch back on {a}": (True, f"{v3.release} serves on {a} again"),
    }
    # v3 is watched on both hosts, each through its own Caddy's count (watch.py).
    watched = Watch.objects.get(deploy=v3)
    assert [(h["name"], bool(h["upstream"])) for h in watched.hosts] == [(a, True), (b, True)]
    # Walked: the reason said the host's remedy four times, "X on a, unknown (…) on b still
    # serves", and the alert "nothing is urgent" of a host that may be down.
    unreached = f"{b} cannot be reached (connection refused)"
    assert v5.reason == (
        f"{unreached}: check the address, the port and that sshd runs there; what serves "
        f"shop.test now: {v3.release} on {a}, unknown ({unreached}; {v3.release} when last "
        f"seen) on {b}"
    ), v5.reason
    assert still == {"v3"}
    [told] = [d for d in alerts_titled(f"Deploy #{v5.pk} of shop failed")]
    assert "What to do: find out why onwatch could not read a host" in told.body
    assert "nothing is urgent" not in told.body
