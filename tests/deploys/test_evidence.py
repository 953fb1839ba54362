"""The evidence of a service (when its tests last passed, how long its pipeline takes
against before, how often it fails) from one function, on its page and in the API, and
the sparkline of each branch's durations. Pipelines are built inline with the times and
states a run leaves; honest when there are too few."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from onwatch.core.models import Organization
from onwatch.deploys import services
from onwatch.deploys.models import Pipeline, Service, State
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def ran(
    service: Service,
    seconds: float,
    state: str = State.SUCCEEDED,
    branch: str = "main",
    ended: datetime | None = None,
) -> Pipeline:
    """A pipeline as a run leaves it: ended (by default now) after `seconds`."""
    ended = ended or timezone.now()
    return Pipeline.objects.create(
        service=service,
        branch=branch,
        trigger="ui",
        state=state,
        started_at=ended - timedelta(seconds=seconds),
        ended_at=ended,
    )


@pytest.fixture
def service(org: Organization) -> Service:
    return service_for(org, "/srv/git/shop.git")


def page_of(service: Service, member: Any) -> str:
    return str(signed_in(member).get(f"/services/{service.pk}/").content.decode())


def api_evidence(service: Service, member: Any, org: Organization) -> dict[str, Any]:
    from onwatch.core.services import issue_token

    raw = issue_token(member, org, "test", ["services:read"], 1).raw
    r = signed_in(member).get(
        f"/api/v1/services/{service.pk}/", headers={"authorization": f"Bearer {raw}"}
    )
    assert r.status_code == 200, r.content
    found: dict[str, Any] = r.json()["evidence"]
    return found


def test_a_service_without_enough_runs_says_so_on_its_page_and_in_the_api(
    org: Organization, service: Service, members: dict[str, Any]
) -> None:
    page = page_of(service, members["viewer"])
    assert "not enough runs yet" in page and "no pipeline has ended yet" in page
    for seconds in (3, 4):
        ran(service, seconds)
    ran(service, 5, State.FAILED)
    e = services.evidence(service)
    assert (e.median_seconds, e.change_percent, e.duration_text) == (
        None,
        None,
        "not enough runs yet",
    )
    assert e.recent.text == "1 of 3 failed (not enough runs yet for a rate)"
    got = api_evidence(service, members["viewer"], org)
    assert got["median_seconds"] is None and got["duration_text"] == "not enough runs yet"
    assert got["last_30_pipelines"] == {
        "failed": 1,
        "counted": 3,
        "percent": None,
        "text": "1 of 3 failed (not enough runs yet for a rate)",
    }
    assert got["last_passed"] is not None


def test_the_duration_is_the_median_of_the_last_ten_green_runs_against_the_ten_before(
    org: Organization, service: Service, members: dict[str, Any]
) -> None:
    start = timezone.now() - timedelta(hours=3)
    for i in range(10):
        ran(service, 5, ended=start + timedelta(minutes=i))
    # A red run between them counts for the rate, never for the duration.
    ran(service, 60, State.FAILED, ended=start + timedelta(minutes=15))
    for i in range(10):
        ran(service, 6, ended=start + timedelta(minutes=20 + i))
    e = services.evidence(service)
    assert (e.median_seconds, e.previous_median_seconds) == (6.0, 5.0)
    assert e.duration_text == "6.0 s, 20 % slower than before"
    assert "6.0 s, 20 % slower than before" in page_of(service, members["viewer"])
    got = api_evidence(service, members["viewer"], org)
    assert got["median_seconds"] == 6.0 and got["previous_median_seconds"] == 5.0
    assert round(got["change_percent"]) == 20
    # Only three green runs of the newer kind: a median, and no trend yet.
    Pipeline.objects.filter(service=service, started_at__lt=start).delete()
    Pipeline.objects.filter(ended_at__lt=start + timedelta(minutes=27)).delete()
    assert services.evidence(service).duration_text == ("6.0 s (not enough runs yet for a trend)")


def test_the_failure_rate_counts_the_last_30_ended_pipelines_and_the_last_30_days(
    org: Organization, service: Service, members: dict[str, Any]
) -> None:
    now = timezone.now()
    # Long ago: five red ones, beyond both windows.
    for i in range(5):
        ran(service, 1, State.FAILED, ended=now - timedelta(days=60, minutes=i))
    # Within the last 30 runs but 40 days ago: one red of ten.
    for i in range(10):
        ran(service, 1, State.FAILED if i == 0 else State.SUCCEEDED, ended=now - timedelta(days=40))
    # Recent: twenty, two red and one interrupted (it did not pass either).
    for i in range(20):
        state = {3: State.FAILED, 7: State.FAILED, 11: State.INTERRUPTED}.get(i, State.SUCCEEDED)
        ran(service, 1, state, ended=now - timedelta(hours=20 - i))
    # Cancelled ones are neither a failure nor a pass; another branch is not the service's.
    ran(service, 1, State.CANCELLED)
    ran(service, 1, State.FAILED, branch="feature")
    e = services.evidence(service)
    assert (e.recent.failed, e.recent.counted) == (4, 30)
    assert e.recent.text == "4 of 30 failed (13 %)"
    assert (e.month.failed, e.month.counted) == (3, 20)
    assert e.month.text == "3 of 20 failed (15 %)"
    page = page_of(service, members["viewer"])
    assert "last 30 pipelines: 4 of 30 failed (13 %); last 30 days: 3 of 20 failed (15 %)" in page
    got = api_evidence(service, members["viewer"], org)
    assert got["last_30_days"]["percent"] == 15.0


def test_each_branch_shows_a_sparkline_of_its_durations_with_failed_ones_marked(
    service: Service, members: dict[str, Any]
) -> None:
    now = timezone.now()
    for i, (seconds, state) in enumerate(
        [(2, State.SUCCEEDED), (4, State.SUCCEEDED), (3, State.FAILED), (8, State.SUCCEEDED)]
    ):
        ran(service, seconds, state, ended=now - timedelta(minutes=10 - i))
    ran(service, 9, branch="feature")
    # Still queued: no duration, so not a point of the line.
    Pipeline.objects.create(service=service, branch="main", trigger="ui")
    page = page_of(service, members["viewer"])
    [svg] = re.findall(r"<svg class=\"sparkline\".*?</svg>", page, re.S)
    said = (
        "Durations of the last 4 pipelines: shortest 2.0 s, median 3.5 s, longest 8.0 s; 1 failed"
    )
    assert f'role="img" aria-label="{said}"' in svg and f"<title>{said}</title>" in svg
    [points] = re.findall(r'points="([^"]+)"', svg)
    ys = [float(p.split(",")[1]) for p in points.split()]
    # Oldest first, the longest run highest (smallest y), the shortest lowest.
    assert len(ys) == 4 and min(ys) == ys[3] and max(ys) == ys[0]
    [mark] = re.findall(r'<circle class="failed" cx="([^"]+)" cy="([^"]+)"', svg)
    assert float(mark[1]) == ys[2]
    # One run on "feature": no line to draw, and no script anywhere for it.
    assert page.count('class="sparkline"') == 1 and "<script" not in page.split("<h2>Pipelines")[1]
