"""What the watch after a deploy calls clearly worse, and how it says so (watch.py), from
answers as Caddy logs them."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import Delivery, Incident
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import agent, caddy, services, watch
from onwatch.deploys.models import (
    Deploy,
    Release,
    ReleaseState,
    Service,
    State,
    Watch,
    WatchState,
)
from onwatch.deploys.services import WATCH_KIND
from onwatch.deploys.switch import Machine
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in
from tests.support.load import Load, fetch
from tests.support.switching import listen_port
from tests.support.watching import deploy, loaded, watched

# One pass of scripts/test runs it: the rules and texts need no database, the deploys below need
# real components far more than a second database.
pytestmark = pytest.mark.once

SLOT = "127.0.0.1:4001"


def answers(ok: int, failed: int, upstream: str = SLOT, ms: float = 10) -> list[caddy.Answer]:
    good = [caddy.Answer(100.0, 200, upstream, 200, ms / 1000)] * ok
    return good + [caddy.Answer(100.0, 500, upstream, 500, 2 * ms / 1000)] * failed


def counts(ok: int, failed: int, ms: float = 10) -> watch.Counts:
    return watch.counted(agent.summed(answers(ok, failed, ms=ms)))


def test_a_release_is_clearly_worse_only_with_enough_requests_over_both_thresholds() -> None:
    service = Service()  # its defaults: 20 requests, over 5 %, over 3 times the baseline
    healthy = counts(990, 10)  # 1 %
    assert watch.clearly_worse(counts(80, 20), healthy, service)
    assert not watch.clearly_worse(counts(16, 3), healthy, service)  # 19 requests
    assert not watch.clearly_worse(counts(96, 4), healthy, service)  # 4 %: not over 5 %
    # A release before it that failed as often: not worse by three times.
    assert not watch.clearly_worse(counts(80, 20), counts(90, 10), service)
    # No baseline (nothing counted before the switch): the share alone decides.
    assert watch.clearly_worse(counts(80, 20), None, service)
    service.watch_error_percent, service.watch_min_requests = 25.0, 5
    assert not watch.clearly_worse(counts(80, 20), healthy, service)


def test_answers_caddy_made_after_the_switch_count_against_the_live_release() -> None:
    other = answers(5, 5, "127.0.0.1:4002")  # the old slot's, draining
    made = [caddy.Answer(101.0, 502, "", None, 5.0), caddy.Answer(99.0, 502, "", None, 5.0)]
    found = watch.of_release([*answers(3, 1), *other, *made], SLOT, live_at=100.5)
    assert (found.requests, found.errors) == (5, 2)


def test_shares_are_said_plainly() -> None:
    assert counts(130 - 30, 30).said() == "23 % of 130 requests"
    assert counts(996, 4).said() == "0.4 % of 1,000 requests"
    assert counts(5, 0).said() == "0 % of 5 requests"
    assert counts(649, 72).said() == "10 % of 721 requests"  # 9.99 %, not "10.0 %"
    assert counts(3, 1).latency() == "12 ms"


def test_a_release_is_clearly_slower_only_over_the_floor_and_the_factor_with_a_baseline() -> None:
    service = Service()  # its defaults: 20 requests, over 500 ms, over 3 times the baseline
    fast = counts(1000, 0, ms=100)
    assert watch.worse_by(counts(100, 0, ms=600), fast, service) == watch.SLOW
    assert watch.worse_by(counts(100, 0, ms=400), fast, service) is None  # under 500 ms
    assert watch.worse_by(counts(100, 0, ms=600), counts(100, 0, ms=250), service) is None
    assert watch.worse_by(counts(19, 0, ms=900), fast, service) is None  # 19 requests
    # No baseline: an app may be slow by nature, so latency alone never rolls back.
    assert watch.worse_by(counts(100, 0, ms=900), None, service) is None
    # A low floor: 2 ms -> 7 ms is 3.5 times as long, yet nobody feels it.
    service.watch_latency_ms = 20
    assert watch.worse_by(counts(100, 0, ms=7), counts(100, 0, ms=2), service) is None
    assert watch.worse_by(counts(100, 0, ms=70), counts(100, 0, ms=2), service) == watch.SLOW
    # Errors come first when both rules fire; factor 0: latency does not count.
    assert watch.worse_by(counts(80, 20, ms=70), counts(100, 0, ms=2), service) == watch.ERRORS
    service.watch_latency_factor = 0
    assert watch.worse_by(counts(100, 0, ms=70), counts(100, 0, ms=2), service) is None


def test_a_thin_baseline_is_left_out_and_the_thresholds_alone_judge() -> None:
    service = Service()  # a baseline needs as many requests as a judgement: 20
    failing = counts(80, 20)  # 20 %
    # 2 errors in 8 requests (25 %) would raise the bar to 75 %: 8 requests prove nothing.
    assert watch.worse_by(failing, counts(6, 2), service) == watch.ERRORS
    assert watch.worse_by(failing, counts(15, 5), service) is None  # 20 requests: they count
    # Nor is latency compared with a thin baseline: an app may be slow by nature.
    assert watch.worse_by(counts(100, 0, ms=900), counts(19, 0, ms=10), service) is None
    assert watch.worse_by(counts(100, 0, ms=900), counts(20, 0, ms=10), service) == watch.SLOW


def a_watch(
    base: tuple[int, int] | None, span: float = 0.0, kept: tuple[int, float] | None = None
) -> Watch:
    """A watch 40 s after release 7's switch, 23 % of 130 answers errors, 12 ms each on
    average, against `base` (requests, errors; 11 ms each) over `span` seconds, of which
    `kept` (requests, seconds) was kept on release 6's row. Not saved: texts only."""
    switched = timezone.now() - timedelta(seconds=40.2)
    deploy = Deploy(
        pk=70,
        service=Service(name="shop"),
        release=Release(pk=7, commit="fed4321abc"),
        switched_at=switched,
    )
    requests, errors = base or (0, 0)
    return Watch(
        deploy=deploy,
        previous=Release(pk=6, commit="abc1234def"),
        started_at=switched,
        requests=130,
        errors=30,
        seconds=1.56,
        base_requests=requests if base else None,
        base_errors=errors if base else None,
        base_seconds=requests * 0.011 if base else None,
        base_span=span if base else None,
        base_kept_requests=kept[0] if kept else None,
        base_kept_span=kept[1] if kept else None,
    )


NOW = "release 7 (fed4321) answered 23 % of 130 requests with errors in its first 40 s, "


def test_the_evidence_says_how_much_baseline_there_was_and_where_it_was_counted() -> None:
    minutes = a_watch((12_312, 49), 306.2, kept=(12_290, 300.1))
    assert watch.comparison(minutes) == NOW + (
        "against 0.4 % of 12,312 requests over 5 min for release 6 (abc1234): 22 in the 6 s "
        "just before this switch and the rest kept from when it served before; its answers "
        "took 12 ms on average (11 ms before)"
    )
    assert watch.judged_against(minutes) == (
        "against those of release 6 (abc1234) (12,312 requests over 5 min)"
    )
    # Its minutes, when nothing came just before the switch; or those seconds alone.
    assert watch.composition(a_watch((300, 0), 303.0, kept=(300, 300.0))) == (
        "all kept from when it served before, none in the 3 s just before this switch"
    )
    assert watch.composition(a_watch((300, 0), 4.0)) == (
        "all in the 4 s just before this switch, as it was never watched"
    )


def test_the_evidence_of_a_thin_baseline_says_the_thresholds_alone_judged() -> None:
    thin = a_watch((8, 2), 5.4)
    assert watch.comparison(thin) == NOW + (
        "against the thresholds alone, as release 6 (abc1234) answered only 8 requests to "
        "compare with (at least 20 are needed): all in the 5 s just before this switch, as it "
        "was never watched; its answers took 12 ms on average"
    )
    assert watch.judged_against(thin) == (
        "against the thresholds alone: too few answers of release 6 (abc1234) to compare with"
    )
    quiet = a_watch((0, 0), 304.0, kept=(0, 300.0))  # watched, but nobody came
    assert watch.against(quiet) == (
        "against the thresholds alone, as no answer of release 6 (abc1234) was counted to "
        "compare with (none in the 4 s just before this switch, nor while it was watched)"
    )
    assert watch.against(a_watch(None)) == (
        "against the thresholds alone, as no answer of release 6 (abc1234) was counted to "
        "compare with (Caddy could not count it before this switch)"
    )


def test_slowness_is_said_against_the_baseline_and_how_much_of_it_there_was() -> None:
    slow = a_watch((12_312, 49), 306.2, kept=(12_290, 300.1))
    slow.errors, slow.seconds = 0, 130 * 0.85
    assert watch.comparison(slow) == (
        "release 7 (fed4321) took 850 ms on average to answer 130 requests in its first 40 s, "
        "77 times as long as release 6 (abc1234), which took 11 ms for 12,312 requests over "
        "5 min (22 in the 6 s just before this switch and the rest kept from when it served "
        "before); 0 % of its answers were errors"
    )


def test_spans_are_said_as_a_person_says_them() -> None:
    said = [watch.span_text(s) for s in (0.4, 6.4, 99.4, 306.2, 5999, 7200)]
    assert said == ["0 s", "6 s", "99 s", "5 min", "1 h 40 min", "2 h"]


# --- with real components: deploys of the switch app behind a real Caddy -------------------

# Caddy writes a request's line just after its answer went out: the client may be quicker.
LOGGED_SECONDS = 0.5


def tally_of(release: Release | None) -> tuple[int | None, int | None]:
    assert release is not None
    release.refresh_from_db()
    return release.tally_requests, release.tally_errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel")
def test_a_release_is_judged_against_the_minutes_its_predecessor_served(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 3, 20, 12.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    with loaded(machine):
        second = deploy(shop, repo, "v2", fail_every=10)  # 10 %: under the 12 % set here
        served = watched(second)
    assert served.state == WatchState.PASSED, served.verdict
    # Its own watch window is kept on its row: the baseline of the release after it.
    assert tally_of(second.release) == (served.requests, served.errors)
    # Nobody loads the site while v3 is deployed: the seconds before its switch hold next
    # to nothing of v2, but v2's minutes are kept.
    third = deploy(shop, repo, "v3", fail_every=5)
    with loaded(machine):
        judged = watched(third)
    assert judged.base_kept_requests == served.requests and judged.base_kept_span
    assert judged.base_errors == served.errors  # nothing of v2 failed just before the switch
    pre, _ = watch.before_switch(judged)
    assert pre < shop.watch_min_requests  # alone, too few to compare with
    # 20 % errors is over the 12 % set, but not over three times v2's 10 %: it passes.
    assert judged.state == WatchState.PASSED, judged.verdict
    v2, v3 = second.release, third.release
    said = (
        rf"passed: {re.escape(str(v3))} answered (1[89]|2[0-2]) % of [\d,]+ requests with "
        rf"errors in its first \d+ s, against (9|9\.\d|10|11) % of {judged.base_requests:,} "
        rf"requests over \d+ s for {re.escape(str(v2))}: .*kept from when it served before.*"
    )
    assert re.fullmatch(said, judged.verdict), judged.verdict
    # Judged on the seconds before its switch alone, it would have been rolled back.
    now = watch.now_of(judged)
    assert watch.worse_by(now, watch.Counts(pre, 0, 0.0), shop) == watch.ERRORS
    # Those seconds joined v2's tally.
    assert tally_of(v2) == (judged.base_requests, judged.base_errors)


@pytest.mark.django_db(transaction=True)
# onwatch's own gate: the test's trickle must land in the seconds before the switch, which
# the quick gate of the other tests shortens to a fifth (none landed then).
@pytest.mark.usefixtures("channel", "own_timings")
def test_a_release_after_a_thin_baseline_is_judged_on_the_thresholds_alone_and_says_so(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")  # the first deploy: nothing watched it
    # About one request a second while v2 is deployed: a few of v1's answers are counted
    # just before the switch, too few to compare with.
    trickle = Load(listen_port(machine), "shop.test", 0, 0, 0, slow=1, slow_seconds=1.0)
    trickle.start()
    try:
        second = deploy(shop, repo, "v2", fail_every=5)
    finally:
        trickle.stop()
    with loaded(machine):
        found = watched(second)
    assert found.state == WatchState.ROLLED_BACK, found.verdict
    assert found.base_kept_requests is None and 0 < (found.base_requests or 0) < 20
    v1, v2 = re.escape(str(found.previous)), re.escape(str(second.release))
    said = (
        rf"{v2} answered (1[5-9]|2\d) % of [\d,]+ requests with errors in its first \d+ s, "
        rf"against the thresholds alone, as {v1} answered only {found.base_requests} requests "
        rf"to compare with \(at least 20 are needed\): all in the \d+ s just before this "
        rf"switch, as it was never watched; its answers took \d+ ms on average; onwatch made "
        rf"{v1} live again at \d\d:\d\d:\d\d UTC, \d+\.\d s after it found {v2} worse"
    )
    assert re.fullmatch(said, found.verdict), found.verdict


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel")
def test_after_a_rollback_the_next_release_is_judged_against_the_one_made_live_again(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    with loaded(machine):
        time.sleep(0.5)
        second = deploy(shop, repo, "v2")
        served = watched(second)
        third = deploy(shop, repo, "v3", fail_every=5)
        failed = watched(third)
        fourth = deploy(shop, repo, "v4")
        last = watched(fourth)
    assert (served.state, failed.state, last.state) == (
        WatchState.PASSED,
        WatchState.ROLLED_BACK,
        WatchState.PASSED,
    ), (served.verdict, failed.verdict, last.verdict)
    v2, v3 = second.release, third.release
    assert failed.rollback is not None and failed.rollback.release == v2
    # v3 was judged against v2's own watch and the seconds before v3's switch ...
    assert failed.base_kept_requests == served.requests and failed.previous == v2
    # ... and kept its failing answers to itself: made live again, v2 has only its own.
    assert tally_of(v3) == (failed.requests, failed.errors) and failed.errors
    assert last.previous == v2 and last.base_kept_requests == failed.base_requests
    assert last.base_errors == 0, last.verdict
    assert tally_of(v2) == (last.base_requests, 0)
    said = (
        rf"passed: {re.escape(str(fourth.release))} answered 0 % of [\d,]+ requests with "
        rf"errors in its first \d+ s, against 0 % of {last.base_requests:,} requests over "
        rf"\d+ s for {re.escape(str(v2))}: [\d,]+ in the \d+ s just before this switch and "
        rf"the rest kept from when it served before; .*"
    )
    assert re.fullmatch(said, last.verdict), last.verdict


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel")
def test_a_watch_still_going_when_a_newer_deploy_switches_is_counted_once(
    machine: Machine, shop: Service, tmp_path: Path
) -> None:
    services.set_watch(shop, 60, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    deploy(shop, repo, "v1")
    second = deploy(shop, repo, "v2")
    for _ in range(5):
        fetch(listen_port(machine), "shop.test")
    time.sleep(LOGGED_SECONDS)
    jobs.run_pending(kinds=[WATCH_KIND])  # one look: v2's 5 answers, on its watch's row
    third = deploy(shop, repo, "v3")
    newer = Watch.objects.get(deploy=third)
    # v2's watch had not ended: what it counted so far is v3's baseline all the same, over
    # the seconds from v2's switch to its one look.
    looked = Watch.objects.get(deploy=second).looked_at
    assert looked and second.switched_at and third.started_at and looked < third.started_at
    counted = (looked - second.switched_at).total_seconds()
    assert newer.base_kept_requests == 5
    assert newer.base_kept_span == pytest.approx(counted, abs=0.01)
    before, before_span = watch.before_switch(newer)
    assert tally_of(second.release) == (before, 0)  # the seconds before the switch only
    replaced = watched(second)
    assert replaced.state == WatchState.REPLACED
    # Ended, it added its 5 to v2's tally: once.
    assert tally_of(second.release) == (before + 5, 0) == (newer.base_requests, 0)
    assert second.release is not None
    assert second.release.tally_span == pytest.approx(counted + before_span, abs=0.01)


@pytest.mark.django_db
def test_a_watchs_span_leaves_out_what_it_never_read(shop: Service) -> None:
    """A newer deploy took Caddy's count over for 4 minutes and failed before its switch;
    the watch counted again from then. Those minutes' answers were never read: its tally's
    span counted them as serving all the same."""
    release = Release.objects.create(service=shop, commit="abc1234")
    switched = timezone.now() - timedelta(minutes=10)
    done = Deploy.objects.create(service=shop, release=release, switched_at=switched)
    looked = Watch.objects.create(deploy=done, until=timezone.now(), upstream="127.0.0.1:4001")
    services.watch_counted(looked, 600, 0, 6.0, 100)
    Watch.objects.filter(pk=looked.pk).update(looked_at=switched + timedelta(minutes=6))
    looked.refresh_from_db()
    services.watch_counting_again(looked)  # at 10 minutes
    assert services.counted_span(looked) == pytest.approx(360, abs=1)
    services.watch_counted(looked, 700, 0, 7.0, 10)  # a minute on
    Watch.objects.filter(pk=looked.pk).update(looked_at=switched + timedelta(minutes=11))
    looked.refresh_from_db()
    assert services.counted_span(looked) == pytest.approx(420, abs=1)


@pytest.mark.django_db
def test_a_watch_adds_its_answers_to_its_releases_tally_once(shop: Service) -> None:
    release = Release.objects.create(service=shop, commit="abc1234")
    switched = timezone.now() - timedelta(minutes=5)
    done = Deploy.objects.create(service=shop, release=release, switched_at=switched)
    ended = Watch.objects.create(deploy=done, until=timezone.now(), upstream="127.0.0.1:4001")
    services.watch_counted(ended, 1200, 6, 12.0, 0)  # its last look, five minutes in
    services.watch_ended(ended, WatchState.PASSED, "passed")
    # Ended again (a look reaped past its lease that judged meanwhile): not counted twice.
    services.watch_ended(ended, WatchState.PASSED, "passed")
    assert tally_of(release) == (1200, 6)
    assert release.tally_span == pytest.approx(300, abs=1)


LIVE_AT = datetime(2026, 3, 2, 9, 0, 14, tzinfo=UTC)


def rolled_back(org: Organization) -> tuple[Release, Release, Watch]:
    """Release 1 live, then release 2 from LIVE_AT, which its watch found answering with
    errors: its rollback made release 1 live again, and the watch followed it to its end."""
    add_channel(org, "ops", "json://127.0.0.1:9/ops")  # deliveries stay rows: no worker
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    for release, live_at in ((one, LIVE_AT - timedelta(days=1)), (two, LIVE_AT)):
        bad = Deploy.objects.create(
            service=service,
            release=release,
            trigger="ui",
            state=State.SUCCEEDED,
            switched_at=live_at,
        )
    watched = services.watch_started(bad, one, SLOT, None)
    rollback = services.queue_rollback(service, SYSTEM, "watch", to=one.pk, queue="rollbacks")
    services.watch_rolling_back(watched, rollback, "release 2 answered 20 % with errors")
    Deploy.objects.filter(pk=rollback.pk).update(state=State.SUCCEEDED, switched_at=LIVE_AT)
    assert not watch.follow_rollback(Watch.objects.get(pk=watched.pk))
    return one, two, Watch.objects.get(pk=watched.pk)


@pytest.mark.django_db
def test_the_incident_of_a_rolled_back_release_began_when_it_went_live(
    org: Organization, members: dict[str, Any]
) -> None:
    """It said the trouble began at the watch's verdict, "the first failed check" (a
    monitor's words), seconds after users began to get errors."""
    _one, two, watched = rolled_back(org)
    incident = Incident.objects.get(source=f"deploys.watch.{watched.pk}")
    assert incident.began_at == LIVE_AT
    page = signed_in(members["viewer"]).get(f"/incidents/{incident.pk}/").content.decode()
    assert f"Trouble began 2026-03-02 09:00:14 ({two.label} went live)." in page
    assert f"({two.label} went live; confirmed " in incidents.incident_text(incident)


@pytest.mark.django_db
def test_a_release_that_passes_its_watch_resolves_the_rolled_back_ones_incident(
    org: Organization,
) -> None:
    """Nothing resolved a watch's incident, and its page has no button to: it stayed open
    for good, and the dashboard counted it."""
    _one, _two, watched = rolled_back(org)
    service = watched.deploy.service
    fixed = Release.objects.create(service=service, commit="f" * 40, state=ReleaseState.READY)
    deploy = Deploy.objects.create(
        service=service, release=fixed, trigger="ui", state=State.SUCCEEDED, switched_at=LIVE_AT
    )
    passing = services.watch_started(deploy, fixed, SLOT, None)
    Watch.objects.filter(pk=passing.pk).update(requests=40, seconds=0.4)
    watch.judged(Watch.objects.get(pk=passing.pk))
    incident = Incident.objects.get(source=f"deploys.watch.{watched.pk}")
    assert incident.state == "resolved"
    [told] = Delivery.objects.filter(title__contains="is well again")
    assert told.title == f"shop is well again: {fixed.label} passed its watch"
