"""What the watch after a deploy calls clearly worse, and how it says so (watch.py), from
answers as Caddy logs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onwatch.alerts import incidents
from onwatch.alerts.models import Delivery, Incident
from onwatch.alerts.services import add_channel
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import caddy, services, watch
from onwatch.deploys.models import Deploy, Release, ReleaseState, Service, State, Watch
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in

pytestmark = pytest.mark.once  # no database of onwatch's: the SQLite pass runs it

SLOT = "127.0.0.1:4001"


def answers(ok: int, failed: int, upstream: str = SLOT, ms: float = 10) -> list[caddy.Answer]:
    good = [caddy.Answer(100.0, 200, upstream, 200, ms / 1000)] * ok
    return good + [caddy.Answer(100.0, 500, upstream, 500, 2 * ms / 1000)] * failed


def counts(ok: int, failed: int, ms: float = 10) -> watch.Counts:
    return watch.counted(answers(ok, failed, ms=ms))


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
