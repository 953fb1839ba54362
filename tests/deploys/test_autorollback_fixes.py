"""The automatic rollback's defects a review found, each with real components as in
test_autorollback.py: a real Caddy, supervisord and git repository, the watch's jobs and
the deploys run here, one after another, as a worker would run them."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from onwatch.alerts.models import Incident
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState
from onwatch.deploys import caddy, polling, releases, services, watch
from onwatch.deploys.models import Deploy, DeployKind, Service, State, Watch, WatchState
from onwatch.deploys.services import DEPLOY_KIND, WATCH_KIND
from onwatch.deploys.switch import Machine
from tests.support.backups import alerts_titled
from tests.support.deploys import commit
from tests.support.load import fetch
from tests.support.releases import app_files
from tests.support.switching import listen_port
from tests.support.watching import deploy, loaded, watched

pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
]


def asked_by_watch(watched: Deploy, to: Deploy) -> Deploy:
    """The rollback a watch asks for when it finds `watched`'s release clearly worse."""
    assert to.release is not None
    rollback = services.queue_rollback(
        watched.service, SYSTEM, "watch", to=to.release.pk, queue="rollbacks"
    )
    services.watch_rolling_back(Watch.objects.get(deploy=watched), rollback, "clearly worse")
    return rollback


def ran(rollback: Deploy) -> Deploy:
    jobs.run_pending(kinds=[DEPLOY_KIND])
    rollback.refresh_from_db()
    return rollback


def test_a_rollback_that_waited_is_checked_again_before_it_runs(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    # The watch of v2 asked for its rollback, which waited while v3 was deployed: it must
    # not revert v3.
    third = deploy(shop, repo, "v3")
    late = ran(asked_by_watch(second, first))
    assert late.state == State.FAILED, late.reason
    assert late.reason.startswith(
        f"Not rolled back: {second.release}, which the watch found answering with errors, is "
        "no longer the live release"
    ), late.reason
    assert fetch(listen_port(machine), "shop.test")[1] == "v3"
    # A rollback asked for by hand, and v3 marked "no rollback past this" while it waited.
    assert second.release is not None and third.release is not None
    by_hand = services.queue_rollback(shop, SYSTEM, "cli", to=second.release.pk)
    services.mark_no_rollback_past(third.release, "drops the old orders table", SYSTEM)
    refused = ran(by_hand)
    assert refused.state == State.FAILED
    assert 'is marked "no rollback past this" (drops the old orders table)' in refused.reason
    assert fetch(listen_port(machine), "shop.test")[1] == "v3"


def test_a_watch_that_gives_up_waiting_for_its_rollback_cancels_it(
    machine: Machine, shop: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    watch.act(Watch.objects.get(deploy=second))  # as when it found v2 clearly worse
    rollback = Deploy.objects.get(kind=DeployKind.ROLLBACK)
    # In a queue of its own: never behind a pipeline, never holding the watches' looks.
    assert rollback.job is not None and rollback.job.queue == "rollbacks"
    assert settings.JOB_QUEUES["rollbacks"] == 1
    monkeypatch.setattr(watch, "ROLLBACK_WAIT_SECONDS", 0.0)
    jobs.run_pending(kinds=[WATCH_KIND])
    ended = Watch.objects.get(deploy=second)
    assert ended.state == WatchState.FAILING
    assert f"its rollback #{rollback.pk} had not ended after" in ended.verdict
    rollback.refresh_from_db()
    assert rollback.job is not None and rollback.job.state == JobState.CANCELLED
    assert rollback.state == State.CANCELLED
    # It can no longer run later, over whatever is live then.
    assert ran(rollback).state == State.CANCELLED
    assert fetch(listen_port(machine), "shop.test")[1] == "v2"


def test_a_deploy_that_fails_before_its_switch_leaves_the_release_before_it_watched(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = deploy(shop, repo, "v1")
    with loaded(machine):
        time.sleep(1)
        second = deploy(shop, repo, "v2", fail_every=5)
        # v3 has no [web] command: its deploy began (taking Caddy's count) and failed.
        commit(repo, {**app_files("v3"), "onwatch.toml": "[build]\n"}, "Version 3, broken")
        third = services.queue_deploy(shop, SYSTEM, "cli")
        jobs.run_pending(kinds=[DEPLOY_KIND])
        third.refresh_from_db()
        assert third.state == State.FAILED and third.switched_at is None, third.reason
        # The failing v2 still serves: its watch went on, and rolled it back.
        ended = watched(second)
    assert ended.state == WatchState.ROLLED_BACK, ended.verdict
    assert ended.rollback is not None and ended.rollback.release == first.release
    assert ended.counting_since is not None and ended.counting_since > third.started_at  # type: ignore[operator]
    assert not machine.caddy.counting("shop.test")


def test_an_older_deploy_that_starts_later_ends_the_watch_and_keeps_its_count(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    # A deploy of v3 asked for first, waiting (as for its pipeline) while v2 is deployed.
    sha = commit(repo, app_files("v3"), "Version 3")
    older = services.queue_deploy(shop, SYSTEM, "cli", commit=sha)
    waited_for = jobs.enqueue(polling.KIND, {"service": 0}, org=shop.org)
    assert older.job is not None
    Job.objects.filter(pk=older.job.pk).update(after=waited_for)
    second = deploy(shop, repo, "v2")
    assert older.pk < second.pk
    Job.objects.filter(pk=waited_for.pk).update(state=JobState.SUCCEEDED)
    jobs.run_pending(kinds=[DEPLOY_KIND])
    assert fetch(listen_port(machine), "shop.test")[1] == "v3"
    old = watched(second)
    assert old.state == WatchState.REPLACED, old.verdict
    assert old.verdict.startswith(f"ended early, as deploy #{older.pk} began: "), old.verdict
    # The count was v3's watch's: it went on to its own end, and stopped it then.
    assert machine.caddy.counting("shop.test")
    new = watched(older)
    assert new.state == WatchState.NOT_JUDGED and new.verdict.startswith("not enough traffic")
    assert not machine.caddy.counting("shop.test")


def test_a_watch_cancelled_or_failing_says_so_alerts_and_stops_caddys_count(
    machine: Machine, shop: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    assert machine.caddy.counting("shop.test")
    [job] = Job.objects.filter(kind=WATCH_KIND, state=JobState.QUEUED)
    stale = Watch.objects.get(deploy=second)
    jobs.cancel(job, "ana")
    cancelled = Watch.objects.get(deploy=second)
    assert cancelled.state == WatchState.NOT_JUDGED
    assert cancelled.verdict.startswith("not judged to the end (the watch was cancelled by ana)")
    assert not machine.caddy.counting("shop.test")
    # A look with the row as it was before (one reaped past its lease) reads it again.
    assert not watch.look(stale, machine, releases.deploy_lock(machine, shop))
    assert Watch.objects.get(deploy=second).verdict == cancelled.verdict
    # A look that fails (here: reading Caddy's log breaks in a way nobody foresaw).
    third = deploy(shop, repo, "v3")

    def broken(*_: object) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(caddy.Caddy, "counted_from", broken)
    [failed] = jobs.run_pending(kinds=[WATCH_KIND])
    assert failed.state == JobState.FAILED
    crashed = Watch.objects.get(deploy=third)
    assert crashed.state == WatchState.NOT_JUDGED
    assert crashed.verdict.startswith(
        "not judged to the end (onwatch's watch failed: RuntimeError: the disk went away)"
    ), crashed.verdict
    assert not machine.caddy.counting("shop.test")
    [alert] = alerts_titled(f"The watch of {third.release} of shop stopped")
    assert "will not roll it back by itself" in alert.body


HIT = """import sys
import urllib.request

for _ in range(10):
    url = f"http://127.0.0.1:{sys.argv[1]}/"
    asked = urllib.request.Request(url, headers={"Host": "shop.test"})
    urllib.request.urlopen(asked, timeout=10).read()
"""


def test_the_release_before_is_counted_only_after_the_release_command(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 1, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    # Its release command (migrations, on this machine's network) sends v1 ten requests:
    # they are answered while the data changes, before anything of the switch began.
    files = app_files("v2", release=f"python3 hit.py {listen_port(machine)}")
    commit(repo, {**files, "hit.py": HIT}, "Version 2")
    second = services.queue_deploy(shop, SYSTEM, "cli")
    jobs.run_pending(kinds=[DEPLOY_KIND])
    second.refresh_from_db()
    assert second.state == State.SUCCEEDED, (second.reason, second.steps)
    counted = Watch.objects.get(deploy=second)
    assert counted.base_requests is not None and counted.base_requests < 10, counted.base_requests


def test_a_release_that_fails_after_serving_well_is_caught_by_its_recent_answers(
    shop: Service, tmp_path: Path
) -> None:
    # Caddy's count and log as a deploy leaves them, written here: 1,000 good answers were
    # counted over five minutes, then v2 began failing half its requests.
    here = Machine(tmp_path)
    log = here.caddy.request_log("shop.test")
    log.parent.mkdir(parents=True)
    log.with_name("shop.test.on").write_text("")
    slot, now = "127.0.0.1:4001", time.time()
    lines = [
        {"ts": now - 5 + i / 10, "duration": 0.01, "status": s, "app_status": s, "upstream": slot}
        for i, s in enumerate([200, 500] * 20)
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    began = timezone.now() - timedelta(minutes=5)
    done = Deploy.objects.create(
        service=shop, state=State.SUCCEEDED, started_at=began, switched_at=began
    )
    looked = Watch.objects.create(
        deploy=done,
        until=timezone.now() + timedelta(minutes=5),
        upstream=slot,
        requests=1000,
        seconds=10.0,
        base_requests=200,
        base_errors=0,
        base_seconds=2.0,
    )
    assert not watch._look(looked, here)
    looked.refresh_from_db()
    # 20 of 1,040 since the switch (1.9 %) is under the service's 5 %: the last 30 s are not.
    assert looked.state == WatchState.FAILING, looked.verdict
    assert "; in its last 30 s it answered 50 % of 40 requests with errors" in looked.verdict
    assert not here.caddy.counting("shop.test")
    # Its trouble began about as its last 30 s did, not as it went live 5 minutes before.
    incident = Incident.objects.get(source=watch.incident_source(looked))
    assert looked.detected_at is not None and incident.began_at is not None
    before_found = (looked.detected_at - incident.began_at).total_seconds()
    assert 30 <= before_found < 35, before_found
    turned = f"{watch.label_of(looked)} served well, then its answers turned bad"
    assert incident.evidence["began"] == turned
