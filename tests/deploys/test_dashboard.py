"""The dashboard's Services card (deploys/dashboard.py), read after an automatic rollback:
the dashboard once said "0 open incidents" (the monitors') and nothing of deploys."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import services, watch
from onwatch.deploys.models import Deploy, Release, ReleaseState, State, WatchState
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in


def test_the_dashboard_says_what_serves_and_that_the_watch_rolled_back(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    viewer = signed_in(members["viewer"])
    assert "No service is deployed yet" in viewer.get("/").content.decode()
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    at = timezone.now() - timedelta(minutes=1)
    for release in (one, two):
        bad = Deploy.objects.create(
            service=service, release=release, trigger="ui", state=State.SUCCEEDED, switched_at=at
        )
    its_watch = services.watch_started(bad, one, "127.0.0.1:9", None)
    rollback = services.queue_rollback(service, SYSTEM, "watch", to=one.pk, queue="rollbacks")
    services.watch_rolling_back(its_watch, rollback, "release 2 answered 20 % with errors")
    Deploy.objects.filter(pk=rollback.pk).update(state=State.SUCCEEDED, switched_at=timezone.now())
    services.watch_ended(its_watch, WatchState.ROLLED_BACK, "release 2 answered 20 % with errors")
    incidents.open_incident(org, watch.incident_source(its_watch), "shop was rolled back", {})
    shown = html.unescape(viewer.get("/").content.decode())
    assert '<td class="live-now">' + one.label in shown
    assert f'rollback #{rollback.pk}</a> <span class="state-succeeded">succeeded' in shown
    assert f'asked for by the watch of <a href="/deploys/{bad.pk}/">deploy #{bad.pk}</a>' in shown
    assert "1 open incident</a> raised by deploys and their watches" in shown


def test_the_card_says_what_serves_on_each_host(org: Organization, members: dict[str, Any]) -> None:
    """Walked: one release for a service on two hosts, as if both served it."""
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    web1 = Host.objects.create(org=org, name="deploy@10.0.0.7", address="10.0.0.7", ready=True)
    services.set_service_hosts(service, [services.this_machine(org), web1], SYSTEM)
    here, there = services.placements(service)
    services.placements_serving({here.pk: "release 4 (1a2b3c4)"})
    shown = html.unescape(signed_in(members["viewer"]).get("/").content.decode())
    assert (
        '<td class="live-now">release 4 (1a2b3c4) on this machine<br>nothing yet on '
        "deploy@10.0.0.7</td>"
    ) in shown
    assert there.serving == ""
