"""An SSH host whose deploy user has a systemd user manager (tests/support/systemd_user.py,
reached by the sessions through their XDG_RUNTIME_DIR as logind would set it): the host
check names systemd as its process manager, and the agent there runs the releases as
units, switched with no failed request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.deploys import caddy, hosts
from onwatch.deploys.switch import program_name
from onwatch.deploys.systemd import Systemd
from tests.support.load import Load, fetch
from tests.support.ssh_hosts import SshHost, app_tree, release_in, ssh_host
from tests.support.switching import QUICK_GATE
from tests.support.systemd_user import reaching, systemctl, user_manager

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it


@pytest.fixture(scope="module")
def host_env() -> Iterator[tuple[SshHost, dict[str, str]]]:
    # The sessions take the user manager as a host new to onwatch would ("auto").
    with (
        user_manager() as manager,
        reaching(manager.env),
        ssh_host(**manager.env, ONWATCH_PROCESS_MANAGER="auto") as host,
    ):
        yield host, manager.env


def lines(host: SshHost) -> dict[str, tuple[bool, str]]:
    facts = hosts.parse(hosts.run_script(host.target(), hosts.PROBE))
    found = hosts.findings(facts, True, "web1", remote=True)
    return {f.what: (f.ok, f.line) for f in found}


def test_the_hosts_check_names_systemd_and_says_what_brings_the_apps_back_at_boot(
    host_env: tuple[SshHost, dict[str, str]],
) -> None:
    host, _ = host_env
    found = lines(host)
    user = host.sshd.user
    assert found["process manager"] == (
        True,
        f"systemd: {user}'s own manager runs the apps as units (systemctl --user)",
    )
    # No logind here to say whether the user lingers: not taken for granted.
    assert found["boot"][0] is False
    assert f"`sudo loginctl enable-linger {user}`" in found["boot"][1]


def test_the_agent_runs_releases_as_units_switched_with_no_failed_request(
    host_env: tuple[SshHost, dict[str, str]], tmp_path: Path
) -> None:
    host, env = host_env
    place = host.place()
    try:
        first, second = place.free_ports(2)
        site = caddy.Site("shop.test", (first, second), "/health")
        place.ensure_ready()
        place.put_site(site)
        folders = [place.release_folder(1, n) for n in (1, 2)]
        for n, folder in enumerate(folders, 1):
            place.receive(folder, app_tree(tmp_path / f"tree-{n}"))
        place.switch(site, release_in(folders[0], "r1"), print, QUICK_GATE)
        load = Load(host.options.http_port, site.domain, slow_seconds=1.5).start()
        try:
            record = place.switch(site, release_in(folders[1], "r2"), print, QUICK_GATE)
        finally:
            tally = load.stop()
    finally:
        place.close()
    assert tally.failed == 0, tally.errors
    assert tally.ok > 20 and tally.slow_ok > 0 and {"r1", "r2"} <= set(tally.answers)
    units = host.machine.supervisor
    assert isinstance(units, Systemd)
    assert {s.name for s in units.all()} == {caddy.PROGRAM, program_name(record.port)}
    assert systemctl(env, "is-active", units.unit(program_name(record.port))) == "active"
    # The connection is closed: the units serve on.
    assert fetch(host.options.http_port, site.domain)[1] == "r2"
