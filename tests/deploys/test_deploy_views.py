"""The service page's deploy part and a deploy's page, as members use them: set a domain,
deploy a commit, see the timeline with each step's time and reason, roll back or be told
why not. The deploys themselves run with real components in test_releases.py."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import services
from onwatch.deploys.models import Deploy, Release, State
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in


def test_a_deployer_deploys_from_the_page_and_reads_its_timeline(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    admin, deployer = signed_in(members["admin"]), signed_in(members["deployer"])
    page = f"/services/{service.pk}/"
    assert "Not deployed: give it a domain" in deployer.get(page).content.decode()
    admin.post(f"{page}domain/", {"domain": "shop.example.com", "auto_deploy": "on"})
    service.refresh_from_db()
    assert (service.domain, service.auto_deploy, len(service.slot_ports)) == (
        "shop.example.com",
        True,
        2,
    )
    shown = deployer.get(page).content.decode()
    assert "each green pipeline of branch main is deployed by itself" in shown
    assert "Deploy this commit" in shown and "Roll back to" not in shown
    answer = deployer.post(f"{page}deploy/", {"commit": "abc1234"})
    deploy = Deploy.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/deploys/{deploy.pk}/"
    queued = deployer.get(f"/deploys/{deploy.pk}/").content.decode()
    assert "its whole log; cancel it there" in queued
    started = timezone.now()
    services.deploy_step(deploy, step("start", started, 0.8, True, "release 1 runs on port 5"))
    services.deploy_step(
        deploy,
        step("health gate", started, 4.0, False, "release 1 never answered 200 3 times in a row"),
    )
    services.deploy_ended(deploy, State.FAILED, "it never got healthy", "nothing")
    timeline = html.unescape(deployer.get(f"/deploys/{deploy.pk}/").content.decode())
    assert "Deploy #" in timeline and "failed: it never got healthy" in timeline
    assert "(its whole log)" in timeline and "cancel it there" not in timeline
    assert "0.8 s" in timeline and "ok</span>: release 1 runs on port 5" in timeline
    assert "4.0 s" in timeline and "failed</span>: release 1 never answered 200 3 times" in timeline
    refused = deployer.post(f"{page}rollback/", follow=True).content.decode()
    assert "no live release to roll back from" in html.unescape(refused)


def step(name: str, started: Any, seconds: float, ok: bool, detail: str) -> dict[str, Any]:
    ended = started + timedelta(seconds=seconds)
    return {
        "name": name,
        "started": (started + timedelta(microseconds=len(name))).isoformat(),
        "ended": ended.isoformat(),
        "seconds": seconds,
        "ok": ok,
        "detail": detail,
    }


def test_a_viewer_sees_deploys_but_no_button(org: Organization, members: dict[str, Any]) -> None:
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    shown = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "deployed by hand only" in shown and "Deploy this commit" not in shown


def test_each_release_shows_what_it_answered_while_it_served(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    first = Release.objects.create(service=service, commit="abc1234")
    watched = Release.objects.create(service=service, commit="def5678")
    services.tallied(watched.pk, services.Tally(12_312, 49, 135.4, 306.0))
    shown = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert (
        "answered 0.4 % of 12,312 requests with errors over 5 min while counted, 11 ms on "
        "average" in shown
    )
    # The first release, never watched: its row says so (and only its row).
    assert shown.count("its answers were never counted (it was never watched)") == 1
    assert first.tally_requests is None
