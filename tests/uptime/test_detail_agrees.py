"""A monitor's page reads everything at one moment: the uptime figures and the checks it
lists agree, even when a check lands while the page is being put together."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.core.models import Organization
from onwatch.uptime.models import CheckResult, Kind, Monitor, State
from tests.support.child import call
from tests.support.child import snapshot as child
from tests.support.fixtures import signed_in
from tests.support.procs import isolated

pytestmark = [pytest.mark.usefixtures("fast_passwords")]


def check(m: Monitor, seconds_from_now: float, ok: bool) -> CheckResult:
    return CheckResult.objects.create(
        monitor=m,
        at=timezone.now() + timedelta(seconds=seconds_from_now),
        ok=ok,
        latency_ms=40 if ok else None,
        status_code=200 if ok else 503,
        error="" if ok else "Got status 503, expected 200-299",
    )


@pytest.mark.django_db
def test_a_check_landing_after_the_pages_moment_is_in_neither_figures_nor_list(
    org: Organization, members: Any
) -> None:
    settings: dict[str, Any] = {"config": {"url": "https://shop.example"}}
    m = Monitor.objects.create(org=org, name="shop", kind=Kind.HTTP, state=State.UP, **settings)
    check(m, -60, ok=True)
    check(m, +5, ok=False)  # written by a prober while the page is being made
    page = signed_in(members["viewer"]).get(f"/monitors/{m.pk}/")
    assert page.status_code == 200
    label, figure, _ = page.context["uptime"][0]
    assert (label, figure) == ("24 hours", "100.00 %")
    assert len(page.context["checks"]) == 1 and page.context["checks_failed"] == 0


def test_reads_in_one_snapshot_do_not_see_a_commit_between_them(tmp_path: Path) -> None:
    # In onwatch's own database (a WAL file on SQLite), not the tests' in-memory one.
    with isolated(tmp_path, migrated=True) as env:
        out = call(child.counts_around_a_commit, env, migrate=True)
    before, during, after, waited = json.loads(out)
    assert not waited, "the writer waited for the page's reads"
    assert (before, during, after) == (1, 1, 2)
