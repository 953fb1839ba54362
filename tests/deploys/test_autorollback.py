"""The watch after a deploy, and automatic rollback, with real components: the switch app
built from a real git repository, run by supervisord behind a real Caddy, clients sending
requests without pause; the watch reads Caddy's own request log, and its jobs (and the
rollback it asks for) run here, one look after another, as a worker would run them."""

from __future__ import annotations

import html
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts.models import Incident
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState
from onwatch.deploys import deploy_cli, services
from onwatch.deploys.models import Deploy, DeployKind, Service, State, Watch, WatchState
from onwatch.deploys.services import WATCH_KIND
from onwatch.deploys.switch import Machine
from tests.support.backups import alerts_titled
from tests.support.fixtures import TokenApi, signed_in
from tests.support.load import fetch
from tests.support.switching import listen_port
from tests.support.watching import deploy, loaded, watched

pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
]

# Caddy writes a request's line just after its answer went out: the client may be quicker.
LOGGED_SECONDS = 0.5


def watch_step(deploy: Deploy) -> dict[str, Any]:
    deploy.refresh_from_db()
    [step] = [s for s in deploy.steps if s["name"] == "watch"]
    return dict(step)


def the_incident(watch: Watch) -> Incident:
    return Incident.objects.get(source=f"deploys.watch.{watch.pk}")


def test_a_release_that_fails_a_fifth_of_its_requests_is_rolled_back_within_the_targets(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = deploy(shop, repo, "v1")
    with loaded(machine):
        time.sleep(1)
        second = deploy(shop, repo, "v2", fail_every=5)
        watch = watched(second)
        assert watch.state == WatchState.ROLLED_BACK, (watch.verdict, watch.rollback)
        assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(5)} == {"v1"}
    rollback = watch.rollback
    assert rollback is not None and rollback.kind == DeployKind.ROLLBACK
    assert rollback.state == State.SUCCEEDED and rollback.release == first.release
    assert second.switched_at and watch.detected_at and rollback.switched_at
    detected = (watch.detected_at - second.switched_at).total_seconds()
    restored = (rollback.switched_at - watch.detected_at).total_seconds()
    drained = (second.ended_at - second.switched_at).total_seconds()  # type: ignore[operator]
    print(
        f"detected {detected:.1f} s after the switch (the deploy ended {drained:.1f} s after "
        f"it); v1 served {restored:.1f} s later"
    )
    assert detected <= 10 and restored <= 5
    # The evidence, in words: the share of errors against the release before it, and how
    # much of it there was (v1, the first, was never watched: the seconds before the switch).
    v1, v2 = first.release, second.release
    said = (
        rf"{re.escape(str(v2))} answered (1[5-9]|2\d) % of [\d,]+ requests with errors in its "
        rf"first \d+ s, against 0 % of {watch.base_requests:,} requests over \d+ s for "
        rf"{re.escape(str(v1))}: all in the \d+ s just before this switch, as it was never "
        rf"watched; its answers took \d+ ms on average \(\d+ ms before\); onwatch made "
        rf"{re.escape(str(v1))} live again at \d\d:\d\d:\d\d UTC, \d+\.\d s after it found "
        rf"{re.escape(str(v2))} worse"
    )
    assert re.fullmatch(said, watch.verdict), watch.verdict
    incident = the_incident(watch)
    assert incident.title == f"shop was rolled back: {v2} answered with errors"
    assert incident.evidence["error"] == watch.verdict
    [alert] = alerts_titled("shop was rolled back")
    assert watch.verdict in alert.body and f"/deploys/{second.pk}/" in alert.body
    step = watch_step(second)
    assert not step["ok"] and step["detail"] == watch.verdict
    # The count was stopped: Caddy no longer logs each request of the site.
    assert not machine.caddy.counting("shop.test")


def test_a_release_that_answers_but_slowly_is_rolled_back_and_the_evidence_says_so(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = deploy(shop, repo, "v1")
    with loaded(machine):
        time.sleep(1)
        second = deploy(shop, repo, "v2", slow_ms=700)  # over the 500 ms floor, no errors
        watch = watched(second)
        assert watch.state == WatchState.ROLLED_BACK, (watch.verdict, watch.rollback)
        assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(5)} == {"v1"}
    assert second.switched_at and watch.detected_at
    detected = (watch.detected_at - second.switched_at).total_seconds()
    print(f"slowness detected {detected:.1f} s after the switch")
    v1, v2 = first.release, second.release
    said = (
        rf"{re.escape(str(v2))} took (7|8|9)\d\d ms on average to answer [\d,]+ requests in "
        rf"its first \d+ s, \d+ times as long as {re.escape(str(v1))}, which took \d+ ms for "
        rf"{watch.base_requests:,} requests over \d+ s \(all in the \d+ s just before this "
        rf"switch, as it was never watched\); 0 % of its answers were errors; onwatch made "
        rf"{re.escape(str(v1))} live again at \d\d:\d\d:\d\d UTC, \d+\.\d s after it found "
        rf"{re.escape(str(v2))} worse"
    )
    assert re.fullmatch(said, watch.verdict), watch.verdict
    assert watch.errors == 0 and watch.requests >= shop.watch_min_requests
    assert the_incident(watch).title == f"shop was rolled back: {v2} answered too slowly"
    [alert] = alerts_titled("shop was rolled back")
    assert watch.verdict in alert.body


def test_a_healthy_release_passes_its_watch_and_its_page_says_so(
    machine: Machine, shop: Service, tmp_path: Path, members: dict[str, Any]
) -> None:
    services.set_watch(shop, 4, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    first = deploy(shop, repo, "v1")
    assert not Watch.objects.filter(deploy=first).exists()  # nothing to go back to
    with loaded(machine):
        time.sleep(1)
        second = deploy(shop, repo, "v2")
        watch = watched(second)
    assert watch.state == WatchState.PASSED, watch.verdict
    assert watch.requests >= 20 and watch.errors == 0 and watch.base_requests
    assert watch.verdict.startswith(
        f"passed: {second.release} answered 0 % of {watch.requests:,} requests with errors"
    )
    assert watch.ended_at and watch.ended_at - watch.started_at >= timedelta(seconds=4)
    step = watch_step(second)
    assert step["ok"] and step["detail"] == watch.verdict
    page = signed_in(members["viewer"]).get(f"/deploys/{second.pk}/").content.decode()
    assert html.escape(watch.verdict) in page
    assert not Incident.objects.exists()
    # Caddy no longer logs each request of the site (those running then end their lines).
    assert not machine.caddy.counting("shop.test")


def test_a_release_with_too_little_traffic_says_it_could_not_be_judged(
    machine: Machine,
    shop: Service,
    tmp_path: Path,
    members: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2", fail_every=2)
    for _ in range(4):
        fetch(listen_port(machine), "shop.test")
    time.sleep(LOGGED_SECONDS)
    watch = watched(second)
    assert watch.state == WatchState.NOT_JUDGED
    assert re.fullmatch(
        r"not enough traffic to judge: 4 requests in \d s \(at least 20 are needed\)",
        watch.verdict,
    ), watch.verdict
    assert watch_step(second)["detail"] == watch.verdict
    # Half its answers were errors, but 4 requests prove nothing either way.
    assert watch.errors == 2 and watch.rollback is None and not Incident.objects.exists()
    # Nowhere does it look passed: its step is "not judged", neither ok nor failed.
    assert watch_step(second)["result"] == "not judged"
    page = signed_in(members["viewer"]).get(f"/deploys/{second.pk}/").content.decode()
    assert '<span class="state-neutral">not judged</span>: not enough traffic' in page
    api = TokenApi(members["viewer"], shop.org, ["services:read"])
    steps = api.call("GET", f"/api/v1/services/deploys/{second.pk}/").json()["steps"]
    assert [s["result"] for s in steps if s["name"] == "watch"] == ["not judged"]
    deploy_cli.follow(second.pk)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in printed if line.startswith("watch\t")] == ["not judged"]


def test_a_release_marked_no_rollback_past_is_not_rolled_back_and_the_alert_says_why(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    # The service's deploy alerts go to its team's channel only, not to "ops" (fixture).
    team = add_channel(shop.org, "shop team", "json://127.0.0.1:9/team")
    fields = services.ServiceFields(
        name=shop.name, git_url=shop.git_url, branch=shop.branch, alert_channels=[team.pk]
    )
    services.change_service(shop, fields, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    with loaded(machine):
        time.sleep(1)
        second = deploy(shop, repo, "v2", fail_every=5)
        assert second.release is not None
        services.mark_no_rollback_past(second.release, "drops the old orders table", SYSTEM)
        watch = watched(second)
        assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(5)} == {"v2"}
    assert watch.state == WatchState.FAILING and watch.rollback is None
    assert not shop.deploys.filter(kind=DeployKind.ROLLBACK).exists()
    assert f"{second.release} answered " in watch.verdict
    assert watch.verdict.endswith(
        f"onwatch did not roll back: Cannot roll back to {services.previous_release(shop)}: "
        f'{second.release} is marked "no rollback past this" (drops the old orders table); '
        "older code may not run on the data it changed. Deploy a fixed commit instead."
    ), watch.verdict
    incident = the_incident(watch)
    assert incident.title == f"{second.release} of shop answers with errors"
    [alert] = alerts_titled(f"{second.release} of shop answers with errors")
    assert (
        "no rollback past this" in alert.body and "The failing release still serves" in alert.body
    )
    # The incident reaches the same people as the service's deploy alerts, and only them.
    assert alert.channel == team and list(incident.channels.all()) == [team]


def test_a_watch_goes_on_from_its_row_after_its_worker_died(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    for _ in range(3):
        fetch(listen_port(machine), "shop.test")
    time.sleep(LOGGED_SECONDS)
    jobs.run_pending(kinds=[WATCH_KIND])  # one look: 3 requests counted, on the row
    assert Watch.objects.get(deploy=second).requests == 3
    # A worker took the next look and died (onwatch stopped): its lease ran out.
    [job] = Job.objects.filter(kind=WATCH_KIND)
    gone = timezone.now() - timedelta(seconds=1)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, worker="gone:1:1", lease_until=gone, attempts=1
    )
    assert jobs.reap_expired() == [job]
    fetch(listen_port(machine), "shop.test")
    time.sleep(LOGGED_SECONDS)
    watch = watched(second)
    assert watch.state == WatchState.NOT_JUDGED
    assert watch.verdict.startswith("not enough traffic to judge: 4 requests in ")
    assert Job.objects.filter(kind=WATCH_KIND).count() == 2
    # The interrupted look alerts nobody: the watch went on by itself.
    assert not alerts_titled("watch")


def test_a_newer_deploy_ends_the_watch_of_the_one_before_and_is_watched_itself(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    third = deploy(shop, repo, "v3")
    old, new = watched(second), watched(third)
    assert old.state == WatchState.REPLACED
    assert old.verdict.startswith(f"ended early, as deploy #{third.pk} began: "), old.verdict
    assert watch_step(second)["detail"] == old.verdict
    # The newer one's count was left to it: it judged, and stopped the count at its end.
    assert new.state == WatchState.NOT_JUDGED and new.previous == second.release
    assert not machine.caddy.counting("shop.test")
