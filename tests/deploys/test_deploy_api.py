"""The deploy operations of the JSON API: set a domain, deploy, roll back, list releases,
mark one "no rollback past this", read a deploy with what users felt during its switch.
Deploys themselves run in test_releases.py with real components; here, what the API
takes, refuses and answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, Organization
from onwatch.deploys import releases, services, switch
from onwatch.deploys.models import Deploy, Service, State
from tests.support.deploys import built_before_a_host_joined, ready_ssh_host, service_for
from tests.support.fixtures import TokenApi
from tests.support.remote_servers import SshServer

SCOPES = ["services:read", "services:write", "deploys:run"]
FELT = [
    "switch_served",
    "switch_failed",
    "switch_app_errors",
    "switch_mixed",
    "drain_seconds",
    "felt_unmeasured",
    "felt_text",
]


def made_live(service: Service, commit: str) -> Deploy:
    """A deploy that ended with its release live, written as the deploy job writes it."""
    deploy = services.queue_deploy(service, SYSTEM, "cli", commit)
    release = services.new_release(deploy, commit)
    services.release_built(release, "python3 app.py", "/health")
    services.deploy_ended(deploy, State.SUCCEEDED, "", release.label)
    return deploy


def test_the_api_sets_a_domain_deploys_and_rolls_back_or_says_why_not(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    api = TokenApi(members["admin"], org, SCOPES)
    base = f"/api/v1/services/{service.pk}"
    early = api.call("POST", f"{base}/deploy/", {})
    assert early.status_code == 422
    assert "shop has no domain yet; set one before deploying" in early.content.decode()
    bad = api.call("PUT", f"{base}/domain/", {"domain": "not a domain"})
    assert bad.status_code == 422, bad.content
    put = api.call("PUT", f"{base}/domain/", {"domain": "Shop.Example.com", "auto_deploy": False})
    assert put.status_code == 200, put.content
    assert (put.json()["domain"], put.json()["auto_deploy"]) == ("shop.example.com", False)
    queued = api.call("POST", f"{base}/deploy/", {"commit": "abc1234"})
    assert queued.status_code == 202, queued.content
    body = queued.json()
    assert (body["kind"], body["state"], body["commit"]) == ("deploy", "queued", "abc1234")
    assert Job.objects.get(pk=body["job_id"]).kind == services.DEPLOY_KIND
    assert api.call("POST", f"{base}/rollback/", {}).status_code == 422
    Deploy.objects.filter(pk=body["id"]).delete()
    service.refresh_from_db()
    first, second = made_live(service, "a" * 40), made_live(service, "b" * 40)
    assert first.release is not None and second.release is not None
    listed = api.call("GET", f"{base}/releases/").json()["releases"]
    assert [(r["id"], r["live"]) for r in listed] == [
        (second.release.pk, True),
        (first.release.pk, False),
    ]
    mark = f"/api/v1/services/releases/{second.release.pk}/no-rollback/"
    assert api.call("POST", mark, {}).status_code == 422  # a reason is needed
    marked = api.call("POST", mark, {"why": "drops the orders table"})
    assert marked.status_code == 200 and marked.json()["no_rollback_past"] is True
    refused = api.call("POST", f"{base}/rollback/", {})
    assert refused.status_code == 422
    assert "drops the orders table" in refused.content.decode()
    api.call("POST", mark, {"on": False})
    back = api.call("POST", f"{base}/rollback/", {"to": first.release.pk})
    assert back.status_code == 202, back.content
    assert (back.json()["kind"], back.json()["release_id"]) == ("rollback", first.release.pk)
    got = api.call("GET", f"/api/v1/services/deploys/{back.json()['id']}/")
    assert got.status_code == 200 and got.json()["steps"] == []


@pytest.mark.parametrize("scopes", [["services:read"], ["services:read", "services:write"]])
def test_deploying_needs_the_deploys_scope(
    org: Organization, members: dict[str, Any], scopes: list[str]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    api = TokenApi(members["admin"], org, scopes)
    assert api.call("POST", f"/api/v1/services/{service.pk}/deploy/", {}).status_code == 403
    assert not Deploy.objects.exists()


def test_a_wildcard_domain_is_refused(org: Organization) -> None:
    # `*.example.com` would take another organization's `shop.example.com`: Caddy tries
    # routes in order, and `*` sorts first.
    service = service_for(org, "/srv/git/shop.git")
    with pytest.raises(services.Refusal):
        services.set_domain(service, "*.example.com", True, SYSTEM)
    service.refresh_from_db()
    assert service.domain == ""


@pytest.mark.parametrize(
    ("counts", "said"),
    [
        (
            {"switch_served": 1204, "switch_failed": 2, "switch_app_errors": 1, "switch_mixed": 0},
            "2 failed requests during the switch (no release answered them), of 1,204 served; "
            "1 error sent by the app itself; drained in 4.2 s",
        ),
        (
            {"felt_unmeasured": "Caddy was restarted during the switch"},
            "Requests during the switch: not measured (Caddy was restarted during the switch)",
        ),
    ],
)
def test_a_deploy_in_the_api_says_what_users_felt_during_its_switch(
    org: Organization, members: dict[str, Any], counts: dict[str, Any], said: str
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    switched = datetime(2026, 12, 7, 3, 0, 0, 250000, tzinfo=UTC)
    deploy = Deploy.objects.create(
        service=service,
        trigger="cli",
        state=State.SUCCEEDED,
        steps=[switch_step(switched)],
        switched_at=switched,
        drain_seconds=4.2,
        **counts,
    )
    api = TokenApi(members["viewer"], org, ["services:read"])
    got = api.call("GET", f"/api/v1/services/deploys/{deploy.pk}/")
    assert got.status_code == 200, got.content
    body = got.json()
    felt = {name: body[name] for name in FELT}
    assert felt == {
        "switch_served": counts.get("switch_served"),
        "switch_failed": counts.get("switch_failed"),
        "switch_app_errors": counts.get("switch_app_errors"),
        "switch_mixed": counts.get("switch_mixed"),
        "drain_seconds": 4.2,
        "felt_unmeasured": counts.get("felt_unmeasured", ""),
        "felt_text": said,
    }
    assert datetime.fromisoformat(body["switched_at"]) == switched


def switch_step(at: datetime) -> dict[str, Any]:
    """A switch step as the deploy job records it."""
    step = switch.Step("switch", at, at + timedelta(seconds=1.3), detail="r2 takes requests")
    return releases.step_row(step)


def test_a_deploy_that_never_switched_has_no_counts_in_the_api(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    deploy = Deploy.objects.create(service=service, trigger="cli", state=State.FAILED)
    api = TokenApi(members["viewer"], org, ["services:read"])
    body = api.call("GET", f"/api/v1/services/deploys/{deploy.pk}/").json()
    assert {name: body[name] for name in FELT} == {
        **dict.fromkeys(FELT[:5]),
        "felt_unmeasured": "",
        "felt_text": "",
    }
    assert body["switched_at"] is None


def test_the_api_sets_a_services_hosts_in_order_and_says_what_serves_on_each(
    org: Organization, members: dict[str, Any], sshd: SshServer
) -> None:
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    web1 = ready_ssh_host(org, sshd.user, sshd.port).name
    sshd.authorize(services.host_key(org).public_key)
    Host.objects.create(org=org, name="deploy@10.0.0.9", address="10.0.0.9", ready=False)
    api = TokenApi(members["admin"], org, SCOPES)
    url = f"/api/v1/services/{service.pk}/hosts/"
    alone = api.call("GET", url).json()
    assert alone == {
        "hosts": [{"host": "this machine", "serving": "nothing", "seen_at": None}],
        "not_stopped": [],
    }
    put = api.call("PUT", url, {"hosts": [web1, "this machine"]})
    assert put.status_code == 200, put.content
    assert [h["host"] for h in put.json()["hosts"]] == [web1, "this machine"]
    assert {h["serving"] for h in put.json()["hosts"]} == {"nothing"}
    for body, said in [
        ({"hosts": ["deploy@10.0.0.9"]}, "deploy@10.0.0.9 has not passed its check"),
        ({"hosts": ["deploy@nowhere"]}, "deploy@nowhere is not a host of"),
        ({"hosts": ["this machine", "this machine"]}, "this machine is named twice"),
    ]:
        refused = api.call("PUT", url, body)
        assert refused.status_code == 422 and said in refused.content.decode(), refused.content
    reader = TokenApi(members["viewer"], org, ["services:read"])
    assert reader.call("PUT", url, {"hosts": []}).status_code == 403
    assert [h["host"] for h in reader.call("GET", url).json()["hosts"]] == [web1, "this machine"]
    # A host that passed its check and went away since: refused now, not at the next deploy.
    assert api.call("PUT", url, {"hosts": ["this machine"]}).status_code == 200
    sshd.stop()
    gone = api.call("PUT", url, {"hosts": [web1]})
    assert (gone.status_code, gone.json()["error"]) == (
        422,
        f"shop's hosts were not changed: {web1} cannot be reached (connection refused): check "
        "the address, the port and that sshd runs there; then set them again",
    )
    assert services.placements(service) == []


def test_an_open_step_of_an_interrupted_deploy_reads_stopped_not_running(
    org: Organization, members: dict[str, Any]
) -> None:
    """Its worker died in the switch: the step's row was never closed."""
    service = service_for(org, "/srv/git/shop.git")
    at = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    open_switch = releases.step_row(switch.Step("switch", at, None))
    deploy = Deploy.objects.create(
        service=service, trigger="cli", state=State.INTERRUPTED, steps=[open_switch]
    )
    api = TokenApi(members["viewer"], org, ["services:read"])
    [step] = api.call("GET", f"/api/v1/services/deploys/{deploy.pk}/").json()["steps"]
    assert step["result"] == "stopped (the deploy was interrupted)"
    Deploy.objects.filter(pk=deploy.pk).update(state=State.RUNNING)
    [step] = api.call("GET", f"/api/v1/services/deploys/{deploy.pk}/").json()["steps"]
    assert step["result"] == "running"


def test_a_rollback_to_a_release_never_built_on_a_host_of_the_service_is_refused_in_one_line(
    org: Organization, members: dict[str, Any]
) -> None:
    service, web1, one, two = built_before_a_host_joined(org)
    api = TokenApi(members["deployer"], org, SCOPES)
    refused = api.call("POST", f"/api/v1/services/{service.pk}/rollback/", {"to": one.pk})
    assert refused.status_code == 422
    said = refused.json()["error"]
    assert said == (
        f"Cannot roll back to {one.label}: it was never built on {web1.name}, which became a "
        "host of shop after it; to have its code live again, deploy its commit (Deploy this "
        "commit aaaaaaa, or onwatch deploy shop --commit aaaaaaa)"
    )
    assert not Deploy.objects.filter(kind="rollback").exists()
    assert services.live_release(service) == two
