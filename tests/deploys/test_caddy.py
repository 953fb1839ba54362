"""Caddy as onwatch runs it: under supervisord, configured through its admin socket, with
slots turned on and off by files and never by a reload."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.deploys import caddy
from onwatch.deploys.procman import Program
from onwatch.deploys.switch import Machine, program_name
from tests.support.load import fetch
from tests.support.switching import APP, caddy_tcp_ports, listen_port, own_machine, release, site

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it


@pytest.fixture
def machine() -> Iterator[Machine]:
    with own_machine() as m:
        m.ensure_running()
        yield m


def run_release(machine: Machine, port: int, label: str) -> None:
    r = release(label)
    machine.supervisor.add(
        Program(program_name(port), r.command, APP.parent, {**r.env, "PORT": str(port)})
    )
    machine.supervisor.start(program_name(port))


def answers(connection: http.client.HTTPConnection, domain: str) -> str:
    connection.request("GET", "/", headers={"Host": domain})
    return connection.getresponse().read().decode()


def test_turning_slots_on_and_off_moves_traffic_on_a_kept_alive_connection(
    machine: Machine,
) -> None:
    shop = site(machine)
    assert machine.caddy.put_site(shop) is True
    config = machine.caddy.config_file.read_text()
    for port, label in zip(shop.ports, ("blue", "green"), strict=True):
        run_release(machine, port, label)
    machine.caddy.turn_on(shop.ports[1], "green")
    time.sleep(caddy.SETTLE_SECONDS)
    kept = http.client.HTTPConnection("127.0.0.1", listen_port(machine), timeout=10)
    assert answers(kept, shop.domain) == "green"
    # `first`: the first slot takes traffic as soon as it is on, the other when it is off.
    machine.caddy.turn_on(shop.ports[0], "blue")
    time.sleep(caddy.SETTLE_SECONDS)
    assert answers(kept, shop.domain) == "blue"
    machine.caddy.turn_off(shop.ports[0])
    time.sleep(caddy.SETTLE_SECONDS)
    assert answers(kept, shop.domain) == "green"  # the same connection: no reload closed it
    assert machine.caddy.config_file.read_text() == config
    assert machine.caddy.live_label(shop.ports[1]) == "green"
    assert machine.caddy.live_label(shop.ports[0]) is None


def test_a_site_is_loaded_once_and_refused_when_bad(machine: Machine) -> None:
    shop = site(machine)
    assert machine.caddy.put_site(shop) is True
    assert machine.caddy.put_site(shop) is False  # unchanged: no reload
    assert machine.caddy.sites() == [shop]
    with pytest.raises(ValueError, match="is not a domain name"):
        machine.caddy.put_site(caddy.Site("shop test", (20001, 20002)))
    with pytest.raises(ValueError, match="must start with /"):
        machine.caddy.put_site(caddy.Site("a.test", (20001, 20002), "health"))
    with pytest.raises(ValueError, match="two different ports"):
        machine.caddy.put_site(caddy.Site("a.test", (20001, 20001)))
    with pytest.raises(ValueError, match=f"port {shop.ports[0]} already belongs to another site"):
        machine.caddy.put_site(caddy.Site("b.test", (shop.ports[0], 20003)))


def test_a_killed_caddy_comes_back_with_its_sites(machine: Machine) -> None:
    shop = site(machine)
    machine.caddy.put_site(shop)
    run_release(machine, shop.ports[0], "blue")
    machine.caddy.turn_on(shop.ports[0], "blue")
    time.sleep(caddy.SETTLE_SECONDS)
    before = machine.supervisor.status(caddy.PROGRAM)
    assert before is not None
    os.kill(before.pid, 9)
    deadline = time.monotonic() + 20
    while True:
        try:
            if fetch(listen_port(machine), shop.domain) == (200, "blue"):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "Caddy did not come back"
        time.sleep(0.1)
    after = machine.supervisor.status(caddy.PROGRAM)
    assert after is not None and after.pid != before.pid


def test_a_slot_whose_process_died_takes_no_traffic(machine: Machine) -> None:
    shop = site(machine)
    machine.caddy.put_site(shop)
    for port, label in zip(shop.ports, ("blue", "green"), strict=True):
        run_release(machine, port, label)
        machine.caddy.turn_on(port, label)
    time.sleep(caddy.SETTLE_SECONDS)
    assert fetch(listen_port(machine), shop.domain) == (200, "blue")
    machine.supervisor.remove(program_name(shop.ports[0]))
    time.sleep(caddy.SETTLE_SECONDS)
    assert {fetch(listen_port(machine), shop.domain)[1] for _ in range(5)} == {"green"}


def test_a_config_change_closes_idle_connections_which_slots_avoid(machine: Machine) -> None:
    """Why a switch only turns slots on and off: what a reload does to a browser's
    kept-alive connection (the test above shows a switch does not)."""
    shop = site(machine)
    machine.caddy.put_site(shop)
    run_release(machine, shop.ports[0], "blue")
    machine.caddy.turn_on(shop.ports[0], "blue")
    time.sleep(caddy.SETTLE_SECONDS)
    kept = http.client.HTTPConnection("127.0.0.1", listen_port(machine), timeout=10)
    assert answers(kept, shop.domain) == "blue"
    assert machine.caddy.put_site(caddy.Site(shop.domain, shop.ports, "/health?changed"))
    time.sleep(0.5)
    with pytest.raises(http.client.RemoteDisconnected):
        answers(kept, shop.domain)


def test_https_with_a_certificate_of_caddys_own_for_a_local_name() -> None:
    with own_machine(https=True) as machine:
        machine.ensure_running()
        shop = caddy.Site("shop.localhost", site(machine).ports)
        machine.caddy.put_site(shop)
        run_release(machine, shop.ports[0], "blue")
        machine.caddy.turn_on(shop.ports[0], "blue")
        authority = machine.caddy.root / "data/caddy/pki/authorities/local/root.crt"
        context = ssl.create_default_context()
        deadline = time.monotonic() + 30
        while not authority.exists():
            assert time.monotonic() < deadline, "Caddy made no local authority"
            time.sleep(0.1)
        context.load_verify_locations(authority)
        time.sleep(caddy.SETTLE_SECONDS)
        secure = http.client.HTTPSConnection(
            "127.0.0.1", machine.options.https_port, timeout=10, context=context
        )
        # The certificate is checked against the name asked for (SNI), as a browser does.
        secure.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", machine.options.https_port), timeout=10),
            server_hostname="shop.localhost",
        )
        assert answers(secure, shop.domain) == "blue"
        plain = http.client.HTTPConnection("127.0.0.1", machine.options.http_port, timeout=10)
        plain.request("GET", "/", headers={"Host": "shop.localhost"})
        moved = plain.getresponse()
        assert moved.status == 308
        # (Caddy names no port in it: in use that is 443.)
        assert moved.getheader("Location") == "https://shop.localhost/"
        # Caddy's authority stayed out of the machine's trusted certificates.
        assert "Caddy Local Authority" not in Path("/etc/ssl/certs/ca-certificates.crt").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user to try")
def test_only_onwatchs_user_can_open_the_admin_api_and_it_has_no_port(machine: Machine) -> None:
    machine.root.chmod(0o711)  # onwatch's data directory may be passable by others
    machine.caddy.root.chmod(0o755)  # someone opened Caddy's folder
    machine.ensure_running()
    machine.caddy.put_site(site(machine))
    assert stat.S_IMODE(machine.caddy.root.stat().st_mode) == 0o700
    admin = str(machine.caddy.socket)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=65534", "--clear-groups"]
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({admin!r})"
    argv = [*as_nobody, "/usr/bin/python3", "-c", connect]
    tried = subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried.stderr
    # Caddy listens on TCP for the sites and its loopback slot checks only.
    options = machine.caddy.options
    assert caddy_tcp_ports(machine) == {options.http_port, options.health_port}
    assert machine.caddy.answers()  # onwatch still drives it


def test_two_processes_adding_sites_at_once_lose_none(tmp_path: Path) -> None:
    """Two deploys (two workers, or two agents on a host) change the sites at the same
    time: each reads, changes and writes them whole, one after the other."""
    root = tmp_path / "caddy"
    spawn = multiprocessing.get_context("spawn")
    adding = [spawn.Process(target=add_sites, args=(root, base)) for base in (20000, 30000)]
    for process in adding:
        process.start()
    for process in adding:
        process.join(60)
    assert [p.exitcode for p in adding] == [0, 0]
    assert len(caddy.Caddy(root, caddy.Options()).sites()) == 80


def add_sites(root: Path, base: int) -> None:
    here = caddy.Caddy(root, caddy.Options())
    for n in range(40):
        port = base + 2 * n
        here.put_site(caddy.Site(f"{base}-{n}.test", (port, port + 1), "/health"))
