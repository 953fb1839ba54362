"""The service page's deploy part and a deploy's page, as members use them: set a domain,
deploy a commit, see the timeline with each step's time and reason, roll back or be told
why not. The deploys themselves run with real components in test_releases.py."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any

from django.test import override_settings
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import services, watch
from onwatch.deploys.models import (
    Deploy,
    Pipeline,
    Release,
    ReleaseState,
    Service,
    State,
    Watch,
    WatchState,
)
from tests.support.deploys import built_before_a_host_joined, ready_ssh_host, service_for
from tests.support.fixtures import signed_in
from tests.support.remote_servers import SshServer


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
    # Who asked, in words ("ui by …", and "cli by cli" from the command line, before).
    assert f"on the service's page by {members['deployer'].email}" in queued
    Deploy.objects.filter(pk=deploy.pk).update(trigger="cli", triggered_by="cli")
    assert "from the command line, " in deployer.get(f"/deploys/{deploy.pk}/").content.decode()
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
    assert "<th>Started (UTC)</th>" in timeline  # the zone its times are in
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


@override_settings(TIME_ZONE="Europe/Berlin")
def test_the_timeline_shows_its_times_in_the_zone_it_names(
    org: Organization, members: dict[str, Any]
) -> None:
    """They were UTC under "Started (CET)"; a step a worker's death left open said
    "running" under a deploy that said "interrupted"."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    deploy = services.queue_deploy(service, SYSTEM, "cli", "")
    started = datetime(2026, 12, 7, 9, 13, tzinfo=UTC)
    services.deploy_step(deploy, step("build", started, 2.0, True, "built"))
    left_open = {"ended": None, "seconds": None}
    services.deploy_step(deploy, step("switch", started, 0, True, "") | left_open)
    Deploy.objects.filter(pk=deploy.pk).update(state=State.INTERRUPTED)
    shown = html.unescape(
        signed_in(members["viewer"]).get(f"/deploys/{deploy.pk}/").content.decode()
    )
    assert "<th>Started (CET)</th>" in shown and "<td>10:13:00</td>" in shown
    assert "09:13:00" not in shown
    assert ">stopped (the deploy was interrupted)</span>" in shown and ">running<" not in shown


def test_a_viewer_sees_deploys_but_no_button(org: Organization, members: dict[str, Any]) -> None:
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    shown = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert "deployed by hand only" in shown and "Deploy this commit" not in shown


def live_deploy(service: Service, release: Release, at: datetime) -> Deploy:
    return Deploy.objects.create(
        service=service,
        release=release,
        trigger="ui",
        state=State.SUCCEEDED,
        switched_at=at,
        ended_at=at,
        drain_seconds=1.0,
    )


def test_a_deploy_rolled_back_by_its_watch_says_so_and_what_serves_now(
    org: Organization, members: dict[str, Any]
) -> None:
    """Read after an automatic rollback, the deploy's page once said "succeeded" and that
    its release served the domain now (both true when it ended), with no word of its watch,
    the rollback or the incident; the rollback's page said "watch by system"."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    now = timezone.now()
    live_deploy(service, one, now - timedelta(minutes=5))
    bad = live_deploy(service, two, now - timedelta(seconds=30))
    Deploy.objects.filter(pk=bad.pk).update(reason="Not every request went well")
    its_watch = services.watch_started(bad, one, "127.0.0.1:9", None)
    viewer = signed_in(members["viewer"])
    watching = html.unescape(viewer.get(f"/deploys/{bad.pk}/").content.decode())
    assert "watching until" in watching and '<meta http-equiv="refresh"' in watching
    rollback = services.queue_rollback(service, SYSTEM, "watch", to=one.pk, queue="rollbacks")
    services.watch_rolling_back(its_watch, rollback, "release 2 answered 20 % with errors")
    Deploy.objects.filter(pk=rollback.pk).update(state=State.SUCCEEDED, switched_at=now)
    incident = incidents.open_incident(
        org, watch.incident_source(its_watch), "shop was rolled back", {"error": "20 %"}
    )
    # What its users felt after the switch: the switch alone said "0 failed requests".
    services.watch_ended(its_watch, WatchState.ROLLED_BACK, "release 2 answered 20 % with errors")
    assert bad.switched_at is not None
    found = bad.switched_at + timedelta(seconds=41)
    Watch.objects.filter(pk=its_watch.pk).update(requests=130, errors=23, detected_at=found)
    Deploy.objects.filter(pk=bad.pk).update(switch_served=12, switch_failed=0)
    shown = html.unescape(viewer.get(f"/deploys/{bad.pk}/").content.decode())
    assert "0 failed requests during the switch, of 12 served" in shown
    said = (
        "rom going live until onwatch found it worse (41 s), it answered 23 of 130 requests "
        "with errors (5xx), those during the switch included; then onwatch rolled it back"
    )
    assert f'<span class="warning served-badly">F{said} (Caddy' in shown
    listed = html.unescape(viewer.get(f"/services/{service.pk}/").content.decode())
    assert listed.count(f"f{said}") == 1  # its row only, not the rollback's
    assert f'Serves shop.example.com now</dt><dd class="live-now">{one.label}' in shown
    assert "rolled back: release 2 answered 20 % with errors" in shown
    # Its warning is no longer shown in the green of "succeeded".
    assert 'succeeded: <span class="warning">Not every request went well</span>' in shown
    assert f'href="/deploys/{rollback.pk}/">rollback #{rollback.pk}</a>' in shown
    assert f'href="/incidents/{incident.pk}/">its incident</a>' in shown
    assert '<meta http-equiv="refresh"' not in shown
    asked = html.unescape(viewer.get(f"/deploys/{rollback.pk}/").content.decode())
    assert f'by the watch of <a href="/deploys/{bad.pk}/">deploy #{bad.pk}</a>' in asked


def test_the_first_release_says_why_it_is_not_watched(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    release = Release.objects.create(service=service, commit="c" * 40, state=ReleaseState.READY)
    first = live_deploy(service, release, timezone.now())
    Deploy.objects.filter(pk=first.pk).update(drain_seconds=None)
    shown = signed_in(members["viewer"]).get(f"/deploys/{first.pk}/").content.decode()
    assert "the service&#x27;s first release has nothing before it to compare with" in shown
    assert "the old release drained after" not in shown


def rolled_back_by_its_watch(service: Service) -> tuple[Release, Release, Deploy]:
    """Release 1 live, then release 2, which its watch rolled back: release 1 serves again."""
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    now = timezone.now()
    live_deploy(service, one, now - timedelta(minutes=5))
    bad = live_deploy(service, two, now - timedelta(minutes=1))
    its_watch = services.watch_started(bad, one, "127.0.0.1:9", None)
    rollback = services.queue_rollback(service, SYSTEM, "watch", to=one.pk, queue="rollbacks")
    services.watch_rolling_back(its_watch, rollback, "release 2 answered 20 % with errors")
    Deploy.objects.filter(pk=rollback.pk).update(state=State.SUCCEEDED, switched_at=now)
    services.watch_ended(its_watch, WatchState.ROLLED_BACK, "release 2 answered 20 % with errors")
    return one, two, rollback


def test_roll_back_after_an_automatic_rollback_does_not_bring_back_the_bad_release(
    org: Organization, members: dict[str, Any]
) -> None:
    """The release live before is then the one the watch rolled back: the page offered
    "Roll back to" it, one click from serving errors again."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    one, two, rollback = rolled_back_by_its_watch(service)
    deployer = signed_in(members["deployer"])
    page = html.unescape(deployer.get(f"/services/{service.pk}/").content.decode())
    assert f"Roll back to {two.label}" not in page
    assert f"the release before, {two.label}, is the one its watch rolled back at" in page
    # Its row in the releases, beside "Make live again", says so too.
    assert '<span class="warning rolled-back">rolled back by its watch at ' in page
    assert f'watch: rolled back (<a href="/deploys/{rollback.pk}/">rollback #' in page
    refused = deployer.post(f"/services/{service.pk}/rollback/", follow=True).content.decode()
    assert f"onwatch rollback shop --to {two.pk}" in html.unescape(refused)
    assert Deploy.objects.filter(kind="rollback").count() == 1
    assert services.live_release(service) == one
    # Named on purpose, it is made live again.
    answer = deployer.post(f"/services/{service.pk}/rollback/", {"to": two.pk})
    assert answer.status_code == 302 and Deploy.objects.filter(release=two).count() == 2


def test_a_second_click_on_roll_back_does_not_queue_a_rollback_that_fails(
    org: Organization, members: dict[str, Any]
) -> None:
    """A stale second tab queued the same rollback again; it failed ("is the live release
    already") and alerted everyone."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    live_deploy(service, one, timezone.now() - timedelta(minutes=5))
    live_deploy(service, two, timezone.now() - timedelta(minutes=1))
    deployer = signed_in(members["deployer"])
    first = deployer.post(f"/services/{service.pk}/rollback/")
    again = deployer.post(f"/services/{service.pk}/rollback/")
    [rollback] = Deploy.objects.filter(kind="rollback")
    # Both land on its page, the second told it was on its way already.
    assert first["Location"] == again["Location"] == f"/deploys/{rollback.pk}/"
    shown = html.unescape(deployer.get(again["Location"]).content.decode())
    assert f"Rollback #{rollback.pk} to {one.label} is on its way already" in shown


@override_settings(CADDY_HTTPS=False, CADDY_HTTP_PORT=21605)
def test_the_pages_link_the_site_and_a_green_pipeline_its_deploy(
    org: Organization, members: dict[str, Any]
) -> None:
    """The service page named the domain alone, on a Caddy listening on port 21605; a
    green pipeline's page said nothing of the deploy it started, whose page said "pipeline
    by system"."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    viewer = signed_in(members["viewer"])
    page = viewer.get(f"/services/{service.pk}/").content.decode()
    assert '<a class="site-url" href="http://shop.example.com:21605/">' in page
    # What serves where and the deploys come first; the fifteen rows of set-up after them.
    assert page.index('class="service-hosts"') < page.index('id="setup"')
    assert page.index('id="deploys"') < page.index("Deploy key") < page.index("Runs as")
    green = Pipeline.objects.create(
        service=service, branch="main", trigger="ui", state=State.SUCCEEDED
    )
    deploy = Deploy.objects.create(service=service, pipeline=green, trigger="pipeline")
    shown = viewer.get(f"/pipelines/{green.pk}/").content.decode()
    assert f'<a href="/deploys/{deploy.pk}/">deploy #{deploy.pk}</a>' in shown
    asked = viewer.get(f"/deploys/{deploy.pk}/").content.decode()
    assert "by itself, as its pipeline went green" in asked


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


def test_the_service_page_sets_its_hosts_and_shows_what_serves_on_each(
    org: Organization, members: dict[str, Any], sshd: SshServer
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    host = ready_ssh_host(org, sshd.user, sshd.port)  # signed in to as hosts are set
    sshd.authorize(services.host_key(org).public_key)
    admin, viewer = signed_in(members["admin"]), signed_in(members["viewer"])
    page = f"/services/{service.pk}/"
    assert "<td>this machine</td><td>nothing</td>" in admin.get(page).content.decode()
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    done = admin.post(f"{page}hosts/", {"hosts": f"this machine, {host.name}"})
    assert done.status_code == 302
    [here, there] = services.placements(service)
    assert (here.host.name, there.host) == ("this machine", host)
    services.placements_serving({here.pk: "release 4 (1a2b3c4)", there.pk: "release 3 (9f8e7d6)"})
    shown = html.unescape(viewer.get(page).content.decode())
    assert "<td>this machine</td><td>release 4 (1a2b3c4) <small>(at " in shown
    assert f"<td>{host.name}</td><td>release 3 (9f8e7d6) <small>(at " in shown
    assert "if one fails, those switched already go back" in shown
    assert "Save the hosts" not in shown  # a viewer changes nothing
    refused = admin.post(f"{page}hosts/", {"hosts": "deploy@nowhere"}, follow=True)
    assert "deploy@nowhere is not a host of" in html.unescape(refused.content.decode())
    assert len(services.placements(service)) == 2
    # Taken off, then put back after it went away: refused beside the form, naming it.
    admin.post(f"{page}hosts/", {"hosts": "this machine"})
    sshd.stop()
    gone = admin.post(f"{page}hosts/", {"hosts": f"this machine, {host.name}"}, follow=True)
    assert (
        f"shop's hosts were not changed: {host.name} cannot be reached (connection refused)"
    ) in html.unescape(gone.content.decode())
    assert services.placements(service) == []


def test_a_service_on_ssh_hosts_only_links_each_hosts_caddy(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: the page linked onwatch's own Caddy ("Answers at http://shop…:49713/"),
    which serves nothing of a service on SSH hosts only; each host's Caddy does."""
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    plain = Host.objects.create(
        org=org,
        name="deploy@10.0.0.7",
        address="10.0.0.7",
        ready=True,
        caddy_https=False,
        http_port=8081,
    )
    tls = Host.objects.create(org=org, name="deploy@10.0.0.8", address="10.0.0.8", ready=True)
    services.set_service_hosts(service, [plain, tls], SYSTEM)
    shown = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert '<a class="site-url" href="http://shop.example.com:8081/">' in shown
    assert '<a class="site-url" href="https://shop.example.com/">' in shown
    assert shown.count('class="site-url"') == 2  # none to onwatch's Caddy
    assert "to these hosts in turn" in shown


def test_refused_hosts_are_shown_again_to_be_mended(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: a host not yet checked refused the list, and the field came back empty."""
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    Host.objects.create(org=org, name="deploy@10.0.0.7", address="10.0.0.7", ready=None)
    admin = signed_in(members["admin"])
    typed = "this machine, deploy@10.0.0.7"
    refused = admin.post(f"/services/{service.pk}/hosts/", {"hosts": typed})
    assert refused.status_code == 302 and refused["Location"].endswith("#deploy-setup")
    shown = html.unescape(admin.get(refused["Location"]).content.decode())
    assert f'name="hosts" value="{typed}"' in shown
    # Beside the form the page opens at, not at its top, out of sight.
    assert (
        '<ul class="errorlist hosts-refused"><li>deploy@10.0.0.7 has not passed its check: '
        "check it on its page under Hosts"
    ) in shown
    # Once: a reload shows the hosts as they are.
    again = html.unescape(admin.get(refused["Location"]).content.decode())
    assert "hosts-refused" not in again and f'value="{typed}"' not in again
    assert services.placements(service) == []
    # The hosts to choose from are named beside the field.
    assert "Hosts</a> page shows them: " in shown and "deploy@10.0.0.7" in shown


def test_a_deploy_sent_back_on_its_first_host_says_so_and_what_serves_on_each(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: a deploy whose second host failed its gate read "Went live 12:02:28 (the old
    release drained after)" and "Serves shop.localhost now: release 1", as if one release
    served one place."""
    from onwatch.deploys.models import Host

    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", True, SYSTEM)
    web1, web2 = (
        Host.objects.create(org=org, name=n, address=n.split("@")[1], ready=True)
        for n in ("deploy@10.0.0.7", "deploy@10.0.0.8")
    )
    services.set_service_hosts(service, [web1, web2], SYSTEM)
    one = Release.objects.create(service=service, commit="a" * 40, state=ReleaseState.READY)
    two = Release.objects.create(service=service, commit="b" * 40, state=ReleaseState.READY)
    live_deploy(service, one, timezone.now() - timedelta(minutes=5))
    now = timezone.now()
    steps = [
        step("switch on deploy@10.0.0.7", now, 1.3, True, f"{two.label} takes requests"),
        step("health gate on deploy@10.0.0.8", now, 60.0, False, "never answered 200"),
        step("switch back on deploy@10.0.0.7", now, 6.1, True, f"{one.label} serves again"),
        step("switch back on deploy@10.0.0.9", now, 2.0, False, "cannot be reached"),
    ]
    failed = Deploy.objects.create(
        service=service,
        release=two,
        trigger="ui",
        state=State.FAILED,
        switched_at=now,
        ended_at=now,
        drain_seconds=1.3,
        steps=steps,
    )
    [here, there] = services.placements(service)
    services.placements_serving({here.pk: one.label, there.pk: one.label})
    shown = html.unescape(
        signed_in(members["viewer"]).get(f"/deploys/{failed.pk}/").content.decode()
    )
    assert (
        '<span class="warning switched-back">then was switched back on deploy@10.0.0.7; going '
        "back failed on deploy@10.0.0.9, where it may serve still</span>"
    ) in shown
    assert "(the old release drained after)" not in shown
    assert (
        f'<dd class="live-now">{one.label} on deploy@10.0.0.7<br>{one.label} on deploy@10.0.0.8'
    ) in shown


def test_the_services_list_says_what_serves_where_and_the_last_deploy(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: the list said only each service's last pipeline."""
    from onwatch.deploys.models import Host

    shop = service_for(org, "/srv/git/shop.git")
    blog = services.add_service(org, services.ServiceFields(name="blog", git_url="/x"), SYSTEM)
    services.set_domain(shop, "shop.example.com", True, SYSTEM)
    web1 = Host.objects.create(org=org, name="deploy@10.0.0.7", address="10.0.0.7", ready=True)
    services.set_service_hosts(shop, [services.this_machine(org), web1], SYSTEM)
    here, there = services.placements(shop)
    services.placements_serving({here.pk: "release 4 (1a2b3c4)", there.pk: "release 3 (9f8e7d6)"})
    failed = Deploy.objects.create(service=shop, trigger="ui", state=State.FAILED)
    shown = html.unescape(signed_in(members["viewer"]).get("/services/").content.decode())
    assert (
        '<td class="serves">release 4 (1a2b3c4) on this machine<br>release 3 (9f8e7d6) on '
        "deploy@10.0.0.7</td>"
    ) in shown
    assert (
        f'<a href="/deploys/{failed.pk}/">deploy #{failed.pk}</a> <span class="state-failed">'
        in (shown)
    )
    assert shown.count("not deployed (no domain)") == 1 and blog.domain == ""


def test_make_live_again_is_offered_only_for_a_release_built_on_every_host_and_says_why_not(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: a release built before a host joined offered "Make live again" (and "Roll
    back to" it); the rollback then failed on the host it was never built on."""
    service, web1, one, two = built_before_a_host_joined(org)
    deployer = signed_in(members["deployer"])
    page = html.unescape(deployer.get(f"/services/{service.pk}/").content.decode())
    why = (
        f"it was never built on {web1.name}, which became a host of shop after it; to have "
        "its code live again, deploy its commit (Deploy this commit aaaaaaa, or onwatch deploy "
        "shop --commit aaaaaaa)"
    )
    assert f'<p class="hint live-again-refused">Cannot be made live again: {why}</p>' in page
    assert f'name="to" value="{one.pk}"' not in page
    assert f"Roll back to {one.label}" not in page
    refused = deployer.post(f"/services/{service.pk}/rollback/", {"to": one.pk}, follow=True)
    assert f"Cannot roll back to {one.label}: {why}" in html.unescape(refused.content.decode())
    assert not Deploy.objects.filter(kind="rollback").exists()
    assert services.live_release(service) == two
    # Built on both: offered (release 3, kept, built on both hosts as release 2 was).
    three = Release.objects.create(service=service, commit="c" * 40, state=ReleaseState.READY)
    steps = Deploy.objects.get(release=two).steps
    Deploy.objects.create(service=service, release=three, trigger="ui", state="failed", steps=steps)
    offered = html.unescape(deployer.get(f"/services/{service.pk}/").content.decode())
    assert f'name="to" value="{three.pk}"' in offered
