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
from onwatch.deploys.models import Deploy, State
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


def test_the_service_page_sets_its_hosts_and_shows_what_serves_on_each(
    org: Organization, members: dict[str, Any]
) -> None:
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    host = Host.objects.create(org=org, name="deploy@10.0.0.7", address="10.0.0.7", ready=True)
    admin, viewer = signed_in(members["admin"]), signed_in(members["viewer"])
    page = f"/services/{service.pk}/"
    assert "<td>this machine</td><td>nothing</td>" in admin.get(page).content.decode()
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    done = admin.post(f"{page}hosts/", {"hosts": "this machine, deploy@10.0.0.7"})
    assert done.status_code == 302
    [here, there] = services.placements(service)
    assert (here.host.name, there.host) == ("this machine", host)
    services.placements_serving({here.pk: "release 4 (1a2b3c4)", there.pk: "release 3 (9f8e7d6)"})
    shown = html.unescape(viewer.get(page).content.decode())
    assert "<td>this machine</td><td>release 4 (1a2b3c4) <small>(at " in shown
    assert "<td>deploy@10.0.0.7</td><td>release 3 (9f8e7d6) <small>(at " in shown
    assert "if one fails, those switched already go back" in shown
    assert "Save the hosts" not in shown  # a viewer changes nothing
    refused = admin.post(f"{page}hosts/", {"hosts": "deploy@nowhere"}, follow=True)
    assert "deploy@nowhere is not a host of" in html.unescape(refused.content.decode())
    assert len(services.placements(service)) == 2
