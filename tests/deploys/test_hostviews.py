"""The hosts pages as people read them: which services each host runs and which release
serves there, and a check's result shown without reloading by hand. (Adding, checking and
removing hosts against a real sshd: test_hosts.py.)"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState, Organization
from onwatch.deploys import hostchecks, hostcli, hosts, services
from onwatch.deploys.models import Host
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in
from tests.support.remote_servers import SshServer


def ready_host(org: Organization, name: str) -> Host:
    user, address = name.split("@")
    return Host.objects.create(org=org, name=name, user=user, address=address, ready=True)


def test_a_hosts_page_says_which_services_run_there_and_what_serves(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: a host's page showed its keys, ports and check, and not the one fact a
    person opens it for, what runs on it; nor did the list."""
    web1, web2 = ready_host(org, "deploy@10.0.0.7"), ready_host(org, "deploy@10.0.0.8")
    shop = service_for(org, "/srv/git/shop.git")
    services.set_domain(shop, "shop.example.com", True, SYSTEM)
    services.set_service_hosts(shop, [web1], SYSTEM)
    [there] = services.placements(shop)
    services.placements_serving({there.pk: "release 3 (9f8e7d6)"})
    viewer = signed_in(members["viewer"])
    page = html.unescape(viewer.get(f"/hosts/{web1.pk}/").content.decode())
    assert (
        f'<td><a href="/services/{shop.pk}/">shop</a></td><td>release 3 (9f8e7d6) <small>(at'
        in (page)
    )
    empty = html.unescape(viewer.get(f"/hosts/{web2.pk}/").content.decode())
    assert "None yet: choose this host on a service's page" in empty
    assert "onwatch services hosts SERVICE deploy@10.0.0.8" in empty
    listed = html.unescape(viewer.get("/hosts/").content.decode())
    assert f'<a href="/services/{shop.pk}/">shop</a> (release 3 (9f8e7d6))' in listed
    assert "those without hosts of their own" in listed  # this machine's row
    # Ready as of its last check, which the list dates: a host can go away since.
    Host.objects.filter(pk=web1.pk).update(checked_at=datetime(2026, 3, 2, 9, 5, tzinfo=UTC))
    dated = html.unescape(viewer.get("/hosts/").content.decode())
    assert '<small class="checked-at">(checked 2026-03-02 09:05)</small>' in dated


def test_a_hosts_page_follows_its_check_until_it_ends(
    org: Organization, members: dict[str, Any]
) -> None:
    """Walked: "this page shows the result", said on queueing a check, held only after a
    reload by hand."""
    host = ready_host(org, "deploy@10.0.0.7")
    admin = signed_in(members["admin"])
    assert admin.post(f"/hosts/{host.pk}/check/").status_code == 302
    waiting = admin.get(f"/hosts/{host.pk}/").content.decode()
    assert '<meta http-equiv="refresh" content="3">' in waiting
    assert "a check is queued" in waiting
    Job.objects.filter(kind=services.HOST_CHECK_KIND).update(state=JobState.SUCCEEDED)
    done = admin.get(f"/hosts/{host.pk}/").content.decode()
    assert 'http-equiv="refresh"' not in done


def test_a_host_added_but_not_ready_exits_1_and_its_page_says_not_ready(
    org: Organization, members: dict[str, Any], sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onwatch hosts add` exited 0 whatever its first check found: a script went on to
    deploy to a host that was not ready."""
    name = f"{sshd.user}@127.0.0.1:{sshd.port}"
    host = services.add_host(org, services.HostFields(address=name), SYSTEM)
    assert hostcli.first_check(host, prepare=False) == 1  # onwatch's key is not on it yet
    said = capsys.readouterr().err
    assert said.startswith(f"onwatch: {name} is added but not ready for deploys: ")
    assert said.count("\n") == 1
    page = html.unescape(signed_in(members["viewer"]).get(f"/hosts/{host.pk}/").content.decode())
    assert '<span class="state-failed">not ready</span>' in page
    assert f"{name} refused onwatch's key" in page
    sshd.authorize(services.host_key(org).public_key)
    assert hostcli.first_check(host, prepare=False) == 1  # signed in: no process manager
    assert "missing (the lines marked missing above)" in capsys.readouterr().err


def test_a_hosts_clock_off_by_90_s_is_said_on_its_page_and_by_its_check(
    org: Organization,
    members: dict[str, Any],
    sshd: SshServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy's watch said a host's clock was off; the host's own page and check,
    where a person looks to set a host right, did not."""
    name = f"{sshd.user}@127.0.0.1:{sshd.port}"
    host = services.add_host(org, services.HostFields(address=name), SYSTEM)
    sshd.authorize(services.host_key(org).public_key)
    viewer = signed_in(members["viewer"])
    page = html.unescape(viewer.get(f"/hosts/{host.pk}/").content.decode())
    assert '<dd class="clock">not read yet: the next check reads it</dd>' in page
    hostcli.first_check(host, prepare=False)  # the same clock as onwatch's: within 2 s
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"ok: {name}'s clock is within 2 s of onwatch's"
    )
    host.refresh_from_db()
    assert host.clock_skew is not None and abs(host.clock_skew) < 1, host.clock_skew
    # onwatch's clock 90 s ahead: the host's, read by the real probe, is 90 s behind it.
    monkeypatch.setattr(hostchecks, "onwatch_clock", lambda: time.time() + 90)
    hostcli.first_check(host, prepare=False)
    behind = (
        f"{name}'s clock is 90 s behind onwatch's, so the times in its own logs are off by "
        "as much (onwatch times deploys by its own clock): set the host's time right: NTP "
        "(as root: timedatectl set-ntp true)"
    )
    assert capsys.readouterr().out.splitlines()[-1] == f"warning: {behind}"
    page = html.unescape(viewer.get(f"/hosts/{host.pk}/").content.decode())
    host.refresh_from_db()
    read = f"<small>(read {host.clock_read_at:%Y-%m-%d %H:%M})</small>"
    assert f'<dd class="clock"><span class="warning">{behind}</span> {read}</dd>' in page
    # A check that could not read the clock (the host went away) keeps the last one read,
    # and when it was read (not the failed check's time).
    sshd.stop()
    with pytest.raises(hosts.HostError):
        hostchecks.check(host)
    was = host.clock_read_at
    host.refresh_from_db()
    assert host.clock_skew is not None and round(host.clock_skew) == -90
    assert was is not None and host.checked_at is not None
    assert host.clock_read_at == was and host.checked_at > was
