"""Services through the pages and the API: one write path (services.py), a deploy key
onwatch makes and shows, secrets whose values are never shown again, and "run now"."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from onwatch.core import ssh
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.models import AuditEntry, Job, Organization
from onwatch.deploys import git, hosts, netguard, services, slirp, svcusers, workdir
from onwatch.deploys.models import (
    Deploy,
    Host,
    Pipeline,
    Release,
    ReleaseState,
    Service,
    State,
)
from tests.support.deploys import service_for
from tests.support.fixtures import TokenApi, signed_in
from tests.support.procs import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
SECRET = "pw-7f3a9c-never-shown"


def entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


def test_a_service_added_on_its_page_gets_a_deploy_key_and_secrets_never_shown_again(
    members: dict[str, Any],
) -> None:
    admin = signed_in(members["admin"])
    form = {"name": "shop", "git_url": "git@github.com:acme/shop.git", "branch": "main"}
    r = admin.post("/services/add/", form)
    service = Service.objects.get(name="shop")
    assert r.status_code == 302 and r["Location"] == f"/services/{service.pk}/"
    assert service.deploy_public_key.startswith("ssh-ed25519 ")
    assert "BEGIN OPENSSH PRIVATE KEY" in service.deploy_key
    page = admin.get(f"/services/{service.pk}/").content.decode()
    assert service.deploy_public_key in page and "PRIVATE KEY" not in page
    r = admin.post(f"/services/{service.pk}/secrets/", {"name": "API_TOKEN", "value": SECRET})
    assert r.status_code == 302
    service.refresh_from_db()
    assert service.secrets == {"API_TOKEN": SECRET}
    for url in (f"/services/{service.pk}/", f"/services/{service.pk}/edit/", "/services/"):
        shown = admin.get(url).content.decode()
        assert SECRET not in shown
    assert "API_TOKEN" in admin.get(f"/services/{service.pk}/edit/").content.decode()
    [added] = entries("service-secret-added")
    assert added.data["secret"] == "API_TOKEN" and SECRET not in json.dumps(added.data)
    admin.post(f"/services/{service.pk}/secrets/remove/", {"name": "API_TOKEN"})
    service.refresh_from_db()
    assert service.secrets == {} and entries("service-secret-removed")


@pytest.mark.parametrize(
    ("git_url", "key_needed"),
    [
        ("git@github.com:acme/shop.git", True),
        ("ssh://git@git.example.com:2222/acme/shop.git", True),
        ("https://github.com/acme/shop.git", False),
        ("/srv/git/shop.git", False),
    ],
)
def test_the_deploy_key_is_asked_for_only_where_git_uses_it(
    members: dict[str, Any], git_url: str, key_needed: bool
) -> None:
    """Only SSH addresses are fetched with the deploy key; for the others the page says it
    is not needed (it is still shown, for a later move to SSH)."""
    admin = signed_in(members["admin"])
    r = admin.post(
        "/services/add/", {"name": "shop", "git_url": git_url, "branch": "main"}, follow=True
    )
    page = r.content.decode()
    service = Service.objects.get(name="shop")
    assert service.deploy_public_key in page
    assert ("Give the repository its deploy key." in page) is key_needed
    assert ("Not needed: onwatch reads this repository without a key." in page) is not key_needed


def test_the_page_refuses_an_address_git_must_not_fetch(members: dict[str, Any]) -> None:
    admin = signed_in(members["admin"])
    form = {"name": "shop", "git_url": "ext::sh -c touch% /tmp/pwned", "branch": "main"}
    r = admin.post("/services/add/", form)
    assert r.status_code == 200 and not Service.objects.exists()
    assert "The repository&#x27;s address is not usable" in r.content.decode()


def test_a_repository_in_onwatchs_own_folders_is_refused_on_the_page_and_the_api(
    org: Organization, members: dict[str, Any], settings: Any, tmp_path: Path
) -> None:
    settings.WORK_DIR, settings.DATA_DIR = str(tmp_path / "work"), str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere.git").symlink_to(tmp_path / "data")
    workspace = tmp_path / "work" / "workspaces" / "1" / "2"
    admin = signed_in(members["admin"])
    form = {"name": "shop", "git_url": f"file://{workspace}", "branch": "main"}
    page = admin.post("/services/add/", form).content.decode()
    assert f"{workspace} is in onwatch&#x27;s work folder, which no service may read" in page
    api = TokenApi(members["admin"], org, ["services:read", "services:write"])
    for url in [str(tmp_path / "data"), str(tmp_path / "elsewhere.git")]:
        r = api.call("POST", "/api/v1/services/", {"name": "shop", "git_url": url})
        assert r.status_code == 422
        assert r.json() == {
            "error": f"The repository's address is not usable: {url} is in onwatch's "
            "data directory, which no service may read"
        }
    assert not Service.objects.exists()
    ok = api.call("POST", "/api/v1/services/", {"name": "shop", "git_url": str(tmp_path / "r")})
    assert ok.status_code == 201, ok.content


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://github.com/acme/shop.git", True),
        ("ssh://git@git.example.com:2222/acme/shop.git", True),
        ("git@github.com:acme/shop.git", True),
        ("github.com:acme/shop.git", True),
        ("/srv/git/shop.git", True),
        ("file:///srv/git/shop.git", True),
        ("http://127.0.0.1:3000/shop.git", True),
        ("http://git.example.com/shop.git", False),
        ("ext::sh -c id", False),
        ("-uhelp", False),
        ("git@-oProxyCommand=touch:x", False),
        ("shop.git", False),
        ("https://", False),
        ("https://ana:ghp_token@github.com/acme/shop.git", False),
    ],
)
def test_which_addresses_a_service_may_use(url: str, ok: bool) -> None:
    assert (git.url_problem(url) is None) == ok, git.url_problem(url)


def test_ssh_addresses_are_where_host_keys_are_pinned() -> None:
    scp = git.ssh_endpoint("git@github.com:acme/shop.git")
    assert scp is not None and (scp.host, scp.port, scp.user) == ("github.com", None, "git")
    url = git.ssh_endpoint("ssh://deploy@git.example.com:2222/shop.git")
    assert url is not None and (url.host, url.port, url.user) == ("git.example.com", 2222, "deploy")
    bare = git.ssh_endpoint("github.com:acme/shop.git")
    assert bare is not None and (bare.host, bare.user) == ("github.com", "")
    assert git.ssh_endpoint("ext::ssh -o ProxyCommand=x host:path") is None
    assert git.ssh_endpoint("https://github.com/acme/shop.git") is None
    assert git.ssh_endpoint("/srv/git/shop.git") is None


def test_run_now_from_the_page_queues_a_pipeline_a_deployer_may_start(
    org: Organization, members: dict[str, Any]
) -> None:
    service = services.add_service(
        org, services.ServiceFields(name="shop", git_url="/srv/git/shop.git"), SYSTEM
    )
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "Run pipeline now" not in page
    deployer = signed_in(members["deployer"])
    assert "Run pipeline now" in deployer.get(f"/services/{service.pk}/").content.decode()
    r = deployer.post(f"/services/{service.pk}/run/")
    pipeline = Pipeline.objects.get()
    assert r["Location"] == f"/pipelines/{pipeline.pk}/"
    assert (pipeline.state, pipeline.trigger, pipeline.branch) == ("queued", "ui", "main")
    assert pipeline.triggered_by == members["deployer"].username
    assert pipeline.job is not None and pipeline.job.queue == "pipelines"
    shown = deployer.get(f"/pipelines/{pipeline.pk}/").content.decode()
    # The log is followed live (server-sent events) while the pipeline is under way.
    assert f'data-events="/jobs/{pipeline.job.pk}/events/"' in shown
    assert "logstream.js" in shown
    listed = deployer.get(f"/services/{service.pk}/").content.decode()
    assert "Branch main" in listed and f"/pipelines/{pipeline.pk}/" in listed
    [entry] = entries("pipeline-run")
    assert entry.actor == members["deployer"].username and entry.data["trigger"] == "ui"


def test_the_api_adds_a_service_runs_it_and_never_answers_a_secret_value(
    org: Organization, members: dict[str, Any]
) -> None:
    api = TokenApi(members["admin"], org, ["services:read", "services:write", "pipelines:run"])
    body = {"name": "shop", "git_url": "/srv/git/shop.git", "secrets": {"API_TOKEN": SECRET}}
    r = api.call("POST", "/api/v1/services/", body)
    assert r.status_code == 201, r.content
    made = r.json()
    assert made["secret_names"] == ["API_TOKEN"] and made["branch"] == "main"
    assert made["deploy_public_key"].startswith("ssh-ed25519 ")
    again = api.call("POST", "/api/v1/services/", body)
    assert again.status_code == 422
    assert again.json() == {"error": "Another service is already called 'shop'"}
    listed = api.call("GET", "/api/v1/services/")
    assert SECRET not in listed.content.decode() and len(listed.json()["services"]) == 1
    ran = api.call("POST", f"/api/v1/services/{made['id']}/run/")
    assert ran.status_code == 202 and ran.json()["state"] == "queued"
    got = api.call("GET", f"/api/v1/services/pipelines/{ran.json()['id']}/")
    assert got.status_code == 200 and got.json()["trigger"] == "api"
    assert Job.objects.get(pk=got.json()["job_id"]).kind == services.KIND
    secret = {"name": "OTHER", "value": "another-secret"}
    r = api.call("POST", f"/api/v1/services/{made['id']}/secrets/", secret)
    assert r.status_code == 200 and r.json()["secret_names"] == ["API_TOKEN", "OTHER"]
    assert "another-secret" not in r.content.decode()
    bad = api.call(
        "POST", f"/api/v1/services/{made['id']}/secrets/", {"name": "PATH", "value": "x"}
    )
    assert bad.status_code == 422 and "onwatch sets PATH for every step" in bad.json()["error"]
    [added] = entries("service-added")
    assert added.actor == members["admin"].username
    assert added.data["secrets"] == ["API_TOKEN"] and SECRET not in json.dumps(added.data)


def test_a_service_changed_on_its_page_moves_on_to_a_new_server_and_is_audited(
    org: Organization, members: dict[str, Any]
) -> None:
    fields = services.ServiceFields(name="shop", git_url="git@git.example.com:acme/shop.git")
    service = services.add_service(org, fields, SYSTEM)
    host_key = " ".join(ssh.new_key_pair("").public.split()[:2])
    services.pin_host_keys(service, f"git.example.com {host_key}\n")
    admin = signed_in(members["admin"])
    form = {"name": "shop", "git_url": "git@git.example.com:acme/shop.git", "branch": "next"}
    form["supersede"] = "on"  # the box is ticked on the page, as it was saved
    assert admin.post(f"/services/{service.pk}/edit/", form).status_code == 302
    service.refresh_from_db()
    assert service.branch == "next" and service.known_hosts  # same server: key kept
    form["git_url"] = "git@other.example.com:acme/shop.git"
    admin.post(f"/services/{service.pk}/edit/", form)
    service.refresh_from_db()
    # Another server's key is pinned anew on its first use, never the old one trusted.
    assert service.known_hosts == ""
    changes = [e.data["changed"] for e in entries("service-changed")]
    assert changes == [["branch"], ["git_url", "known_hosts"]]
    assert all(e.actor == members["admin"].username for e in entries("service-changed"))
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "never yet" in page and "no pipeline has ended yet" in page


def test_a_service_chooses_which_channels_hear_of_its_pipelines_on_its_page_and_the_api(
    org: Organization, members: dict[str, Any], settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # its URLs are on this machine
    from onwatch.alerts.services import add_channel, set_own_channel

    team = add_channel(org, "team", "json://127.0.0.1:9/team")
    add_channel(org, "everyone", "json://127.0.0.1:9/all")
    mine = set_own_channel(org, members["admin"], "json://127.0.0.1:9/mine", SYSTEM)
    api = TokenApi(members["admin"], org, ["services:read", "services:write"])
    body: dict[str, Any] = {"name": "shop", "git_url": "/srv/git/shop.git"}
    made = api.call("POST", "/api/v1/services/", body).json()
    # Every channel, as before there was a choice.
    assert made["alert_channels"] is None
    # A member's own channel is not one the service can choose, and nobody is refused too.
    for ids, wrong in (
        ([mine.pk], f"No channel {mine.pk} in this organization"),
        ([], "Choose at least one channel, or every channel"),
    ):
        r = api.call("POST", "/api/v1/services/", body | {"name": "cart", "alert_channels": ids})
        assert r.status_code == 422 and r.json()["error"].startswith(wrong)
    r = api.call("POST", "/api/v1/services/", body | {"name": "cart", "alert_channels": [team.pk]})
    assert r.status_code == 201 and r.json()["alert_channels"] == [team.pk]
    got = api.call("GET", f"/api/v1/services/{r.json()['id']}/").json()
    assert got["alert_channels"] == [team.pk] and "evidence" in got
    [added] = [e for e in entries("service-added") if e.target == "cart"]
    assert added.data["alert_channels"] == [team.pk]

    admin = signed_in(members["admin"])
    edit = admin.get(f"/services/{made['id']}/edit/").content.decode()
    assert "team" in edit and "everyone" in edit and mine.name not in edit
    form = {"name": "shop", "git_url": "/srv/git/shop.git", "branch": "main", "supersede": "on"}
    chosen = form | {"only_chosen": "on", "alert_channels": [str(team.pk)]}
    assert admin.post(f"/services/{made['id']}/edit/", chosen).status_code == 302
    service = Service.objects.get(pk=made["id"])
    assert services.channels_chosen(service) == [team.pk]
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "<dt>Alerts go to</dt><dd>team, and to whoever pushed" in page
    assert entries("service-changed")[-1].data["changed"] == ["alert_channels"]
    refused = admin.post(f"/services/{made['id']}/edit/", form | {"only_chosen": "on"})
    assert "Choose at least one channel" in refused.content.decode()
    assert admin.post(f"/services/{made['id']}/edit/", form).status_code == 302
    assert services.channels_chosen(Service.objects.get(pk=made["id"])) is None


def test_the_api_deletes_a_service_only_when_told_its_name(
    org: Organization, members: dict[str, Any]
) -> None:
    api = TokenApi(members["admin"], org, ["services:read", "services:write", "pipelines:run"])
    made = api.call("POST", "/api/v1/services/", {"name": "shop", "git_url": "/srv/git/x.git"})
    url = f"/api/v1/services/{made.json()['id']}/"
    queued = api.call("POST", f"{url}run/").json()
    wrong = api.call("DELETE", f"{url}?confirm=blog")
    assert wrong.status_code == 422
    assert wrong.json() == {"error": "Type the service's name, shop, to delete it"}
    assert api.call("GET", url).status_code == 200
    gone = api.call("DELETE", f"{url}?confirm=shop")
    assert gone.status_code == 200, gone.content
    # The queued pipeline was cancelled, then went with the rest of its history.
    assert gone.json() == {"pipelines": 1, "cancelled": [queued["id"]]}
    assert api.call("GET", url).status_code == 404
    assert not Pipeline.objects.exists() and not Job.objects.filter(pk=queued["job_id"]).exists()
    [deleted] = entries("service-deleted")
    assert deleted.actor == members["admin"].username and deleted.target == "shop"


def test_the_page_says_whether_steps_have_a_network_of_their_own(
    org: Organization, members: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services.add_service(
        org, services.ServiceFields(name="shop", git_url="/srv/git/shop.git"), SYSTEM
    )
    viewer = signed_in(members["viewer"])
    monkeypatch.setattr(netguard, "as_root", lambda: True)
    own = viewer.get(f"/services/{service.pk}/").content.decode()
    assert "their own: they reach the internet (package downloads), but not what" in own
    assert "nor this machine by its other addresses, nor link-local addresses" in own
    # onwatch not running as root cannot set the routes that block those: the page says so.
    monkeypatch.setattr(netguard, "as_root", lambda: False)
    plain = viewer.get(f"/services/{service.pk}/").content.decode()
    assert "they still reach this machine by its other addresses" in plain
    assert "onwatch blocks those only when it runs as root" in plain
    monkeypatch.setattr(slirp, "PATH", "/nonexistent")
    shared = viewer.get(f"/services/{service.pk}/").content.decode()
    assert "shared with this machine: a step can reach what listens only here" in shared
    assert "apt-get install slirp4netns" in shared


def test_the_page_says_whether_the_service_runs_as_a_user_of_its_own(
    org: Organization, members: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services.add_service(
        org, services.ServiceFields(name="shop", git_url="/srv/git/shop.git"), SYSTEM
    )
    viewer = signed_in(members["viewer"])
    monkeypatch.setattr(svcusers, "applies", lambda: True)
    own = viewer.get(f"/services/{service.pk}/").content.decode()
    assert f"a user of its own on this machine (<code>{svcusers.name_of(service.pk)}</code>)" in own
    assert "Deleting the service keeps that user, locked and renamed, so that no new" in own
    # Run as a plain user, onwatch cannot make users: every service shares one, and it says so.
    monkeypatch.setattr(svcusers, "applies", lambda: False)
    shared = viewer.get(f"/services/{service.pk}/").content.decode()
    assert "the same user as every other service's steps and web processes" in shared
    assert "onwatch gives each service a user of its own only when it runs as root" in shared


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives services users of their own")
def test_the_page_says_a_service_deployed_before_it_had_its_own_user_still_shares_one(
    org: Organization, members: dict[str, Any]
) -> None:
    service = services.add_service(
        org, services.ServiceFields(name="shop", git_url="/srv/git/shop.git"), SYSTEM
    )
    own = svcusers.ensure(service.pk)
    try:
        # Made live by an older onwatch: its files are the shared step user's.
        folder = workdir.work_folder("releases", str(service.pk), "1")
        step_user = pwd.getpwnam(os.environ.get("ONWATCH_STEP_USER", "nobody"))
        os.chown(folder, step_user.pw_uid, step_user.pw_gid)
        release = Release.objects.create(service=service, commit="a" * 40, directory=str(folder))
        Deploy.objects.create(
            service=service,
            release=release,
            trigger="cli",
            state=State.SUCCEEDED,
            ended_at=timezone.now(),
        )
        viewer = signed_in(members["viewer"])
        before = viewer.get(f"/services/{service.pk}/").content.decode()
        assert "for now, the same user as every other service's steps" in before
        assert f"Its next deploy moves it to a user of its own (<code>{own}</code>)" in before
        assert "cannot read other services' files" not in before
        # What its next deploy does (make_live, then own_releases).
        workdir.hand_to(folder, own)
        workdir.close_to(folder.parent, own)
        after = viewer.get(f"/services/{service.pk}/").content.decode()
        assert f"a user of its own on this machine (<code>{own}</code>)" in after
        assert "for now, the same user" not in after
    finally:
        shutil.rmtree(workdir.work_folder("releases", str(service.pk)))
        svcusers.remove(service.pk)


def test_a_service_may_use_its_own_pushed_copy_as_its_repository_but_no_other(
    org: Organization, tmp_path: Path
) -> None:
    def fields(name: str, url: str) -> services.ServiceFields:
        return services.ServiceFields(name=name, git_url=url)

    shop = services.add_service(org, fields("shop", str(tmp_path / "shop")), SYSTEM)
    blog = services.add_service(org, fields("blog", str(tmp_path / "blog")), SYSTEM)
    own = str(services.pushed_repository(shop))
    assert services.change_service(shop, fields("shop", own), SYSTEM) == ["git_url"]
    with pytest.raises(services.Refusal, match="is in onwatch's data directory"):
        services.change_service(blog, fields("blog", own), SYSTEM)


def test_a_service_whose_chosen_channels_were_all_deleted_alerts_everyone_not_nobody(
    org: Organization, members: dict[str, Any]
) -> None:
    from onwatch.alerts.services import add_channel, remove_channel

    team = add_channel(org, "team", "json://127.0.0.1:9/team")
    everyone = add_channel(org, "everyone", "json://127.0.0.1:9/all")
    fields = {"name": "shop", "git_url": "/srv/git/shop.git", "alert_channels": [team.pk]}
    api = TokenApi(members["admin"], org, ["services:read", "services:write"])
    made = api.call("POST", "/api/v1/services/", fields).json()
    service = Service.objects.get(pk=made["id"])
    assert services.deploy_channels(service) == [team]
    remove_channel(team, SYSTEM)
    # Pipelines, deploys, their watches and linked error projects all ask the same function.
    assert services.deploy_channels(service) is None
    assert services.channels_hearing(service.pk) == [everyone]
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "every alert channel (each channel it chose was deleted" in page


def checked_host(org: Organization, name: str, ready: bool | None = True) -> Any:
    """An SSH host as its check left it (never reached here)."""
    from onwatch.deploys.models import Host

    user, address = name.split("@")
    address, _, port = address.partition(":")
    return Host.objects.create(
        org=org, name=name, user=user, address=address, port=int(port or 22), ready=ready
    )


def test_a_service_runs_on_the_hosts_set_in_order_and_refuses_any_it_cannot_run_on(
    org: Organization,
) -> None:
    service = services.add_service(org, services.ServiceFields(name="shop", git_url="/x"), SYSTEM)
    here = services.this_machine(org)
    # The first answers nothing: taken off the service, it cannot be told to stop.
    gone = f"deploy@127.0.0.1:{free_port()}"
    web1, web2 = checked_host(org, gone), checked_host(org, "deploy@10.0.0.8")
    unchecked = checked_host(org, "deploy@10.0.0.9", ready=None)
    failing = checked_host(org, "deploy@10.0.0.10", ready=False)
    theirs = checked_host(Organization.objects.create(name="Other"), "deploy@10.0.0.11")
    assert services.placements(service) == []  # this machine only, as always
    services.set_service_hosts(service, [web2, here, web1], SYSTEM)
    assert [p.host.name for p in services.placements(service)] == [
        "deploy@10.0.0.8",
        "this machine",
        gone,
    ]
    refusals = {
        "deploy@10.0.0.9 has not passed its check: check it on its page under Hosts (or onwatch "
        "hosts check deploy@10.0.0.9) and fix what it says first": [unchecked],
        "deploy@10.0.0.10 has not passed its check: check it on its page under Hosts (or onwatch "
        "hosts check deploy@10.0.0.10) and fix what it says first": [web1, failing],
        "deploy@10.0.0.11 is not a host of Acme": [theirs],
        f"{gone} is named twice; name each host once": [web1, here, web1],
    }
    for said, chosen in refusals.items():
        with pytest.raises(services.Refusal) as refused:
            services.set_service_hosts(service, chosen, SYSTEM)
        assert str(refused.value) == said
    # Refused: nothing changed.
    assert len(services.placements(service)) == 3
    with pytest.raises(services.Refusal) as unknown:
        services.hosts_named(org, [gone, "deploy@nowhere"])
    assert (
        str(unknown.value)
        == "deploy@nowhere is not a host of Acme: add it under Hosts (or onwatch hosts add)"
    )
    # A host kept keeps the slot ports it gave; this machine alone is no hosts at all.
    [kept] = [p for p in services.placements(service) if p.host == web1]
    services.placement_ports(kept, [41001, 41002])
    services.placements_serving({kept.pk: "release 4 (1a2b3c4)"})
    assert services.set_service_hosts(service, [web1], SYSTEM) == []  # web2 never served
    assert [(p.host, p.slot_ports, p.serving) for p in services.placements(service)] == [
        (web1, [41001, 41002], "release 4 (1a2b3c4)")
    ]
    # A host gone for good is still taken off, and what may run there is said.
    [left] = services.set_service_hosts(service, [here], SYSTEM)
    assert left.startswith(f"shop could not be stopped on {gone} (")
    assert left.endswith(
        "it may still serve there: stop it there by hand, or set the host "
        "back and take it off again once it answers"
    )
    assert services.placements(service) == []
    assert [e.data["hosts"] for e in entries("service-hosts-set")] == [
        ["deploy@10.0.0.8", "this machine", gone],
        [gone],
        [],
    ]
    assert entries("service-hosts-set")[-1].data["not_stopped"] == [left]


def test_a_service_serving_only_on_a_host_gone_for_good_can_still_be_taken_off_it(
    org: Organization,
) -> None:
    """Taking a service off its last serving host is refused while a release answers
    there; one that does not answer serves nobody, and must not stay stuck on it."""
    service = services.add_service(org, services.ServiceFields(name="shop", git_url="/x"), SYSTEM)
    services.set_domain(service, "shop.test", False, SYSTEM)
    gone = checked_host(org, f"deploy@127.0.0.1:{free_port()}")
    services.set_service_hosts(service, [gone], SYSTEM)
    deploy = services.queue_deploy(service, SYSTEM, "cli")
    release = services.new_release(deploy, "1a2b3c4d")
    Deploy.objects.filter(pk=deploy.pk).update(state=State.SUCCEEDED)
    [placed] = services.placements(service)
    services.placement_ports(placed, [41001, 41002])
    services.placements_serving({placed.pk: str(release)})
    [left] = services.set_service_hosts(service, [services.this_machine(org)], SYSTEM)
    assert left.startswith(f"shop could not be stopped on {gone.name} (")
    assert services.placements(service) == []


def test_a_host_a_service_runs_on_is_not_removed_from_under_it(org: Organization) -> None:
    service = services.add_service(org, services.ServiceFields(name="shop", git_url="/x"), SYSTEM)
    host = checked_host(org, "deploy@10.0.0.7")
    services.set_service_hosts(service, [host], SYSTEM)
    with pytest.raises(services.Refusal) as refused:
        services.remove_host(host, SYSTEM)
    assert str(refused.value) == (
        "shop runs on deploy@10.0.0.7; take deploy@10.0.0.7 out of their hosts "
        "(a service's page, Set-up, or onwatch services hosts SERVICE HOST…) first"
    )
    services.set_service_hosts(service, [], SYSTEM)
    services.remove_host(host, SYSTEM)
    assert not type(host).objects.filter(pk=host.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_two_rollback_clicks_at_once_queue_one_rollback(org: Organization) -> None:
    """Both passed the check before either's rollback was written; the second then failed
    ("… is the live release already") and alerted everyone."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    for n, c in enumerate("ab"):
        release = Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        at = timezone.now() - timedelta(minutes=5 - n)
        Deploy.objects.create(
            service=service,
            release=release,
            trigger="ui",
            state=State.SUCCEEDED,
            switched_at=at,
            ended_at=at,
            drain_seconds=1.0,
        )
    inside, go_on = threading.Event(), threading.Event()

    class Held(Actor):  # the first click, held just after it wrote its rollback
        def record(self, *args: Any, **kwargs: Any) -> Any:
            inside.set()
            go_on.wait(10)
            return super().record(*args, **kwargs)

    said: dict[str, object] = {}

    def click(actor: Actor) -> None:
        try:
            said[actor.name] = services.queue_rollback(service, actor, "ui")
        except Exception as e:
            said[actor.name] = e
        finally:
            connection.close()

    first = threading.Thread(target=click, args=(Held("first"),))
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=click, args=(Actor("second"),))
    second.start()
    time.sleep(0.5)  # it waits for the first, or passes the check as it did
    go_on.set()
    for click_thread in (first, second):
        click_thread.join(10)
    [rollback] = Deploy.objects.filter(kind="rollback")
    assert said["first"] == rollback and isinstance(said["second"], services.OnItsWay), said


def test_a_deploys_reason_is_stored_masked_whoever_wrote_it(org: Organization) -> None:
    """A host's or a switch's own words can quote the service's environment."""
    service = service_for(org, "/srv/git/shop.git")
    service.secrets = {"API_TOKEN": SECRET}
    service.save()
    deploy = Deploy.objects.create(service=service, trigger="cli", state=State.RUNNING)
    services.deploy_ended(deploy, State.FAILED, f"on deploy@10.0.0.7: API_TOKEN={SECRET}", "")
    deploy.refresh_from_db()
    assert SECRET not in deploy.reason and deploy.reason.startswith("on deploy@10.0.0.7: ")
    reasons = [e.data.get("reason", "") for e in AuditEntry.objects.all()]
    assert reasons and not any(SECRET in r for r in reasons)


def test_hosts_that_do_not_answer_are_asked_at_once_not_one_after_another(
    org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding two hosts gone silent kept the request waiting the sign-in limit twice."""
    monkeypatch.setattr(hosts, "SIGN_IN_SECONDS", 3)
    service = service_for(org, "/srv/git/shop.git")
    silent, chosen = [], [services.this_machine(org)]
    for _ in range(2):  # each takes the connection and never says a word, as a hung sshd
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        silent.append(s)
        port = s.getsockname()[1]
        host = Host.objects.create(
            org=org,
            name=f"deploy@127.0.0.1:{port}",
            user="deploy",
            address="127.0.0.1",
            port=port,
            known_hosts=f"[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE",
            ready=True,
        )
        chosen.append(host)
    began = time.monotonic()
    try:
        with pytest.raises(services.Refusal) as refused:
            services.set_service_hosts(service, chosen, SYSTEM, look=True)
    finally:
        for s in silent:
            s.close()
    took = time.monotonic() - began
    names = [h.name for h in chosen[1:]]
    assert str(refused.value) == (
        f"shop's hosts were not changed: {names[0]} did not answer within 3 s: check that it "
        f"is up, its address and that sshd runs there; {names[1]} did not answer within 3 s: "
        "check that it is up, its address and that sshd runs there; then set them again"
    )
    assert 3 <= took < 5.5, f"two silent hosts took {took:.1f} s: one limit is 3 s"
    assert services.placements(service) == []
