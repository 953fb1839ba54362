"""Which addresses onwatch answers at and sees. Behind a proxy, sign-ins, lock-outs,
audit entries and pings carry the client's address: X-Forwarded-For counts from the
proxies named in ONWATCH_TRUSTED_PROXIES, never from anyone else (a client could write the
header itself)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from onwatch.cli import proxy_unnamed
from onwatch.config import base_url
from tests.support.child import call
from tests.support.child import signin as child_signin
from tests.support.child import uptime as child_uptime
from tests.support.procs import Running, isolated, run, wait_http
from tests.support.signin import wrong_password

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def ping_through(base_url: str, ping_id: str, forwarded_for: str) -> None:
    request = urllib.request.Request(
        f"{base_url}/ping/{ping_id}", headers={"X-Forwarded-For": forwarded_for}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


@pytest.mark.parametrize(
    ("trusted", "seen"),
    [
        # The default: nobody (any program on this machine reaches the loopback port).
        (None, "127.0.0.1"),
        ("127.0.0.1", "192.0.2.7"),  # a proxy of one's own on this machine, named
        ("192.0.2.1", "127.0.0.1"),  # a proxy elsewhere is named: this machine's header is not
    ],
)
def test_the_client_address_comes_from_trusted_proxies_only(
    tmp_path: Path, trusted: str | None, seen: str
) -> None:
    extra = {"ONWATCH_WEB_WORKERS": "1"}
    if trusted:
        extra["ONWATCH_TRUSTED_PROXIES"] = trusted
    with isolated(tmp_path, migrated=True, **extra) as env:
        ping_id = json.loads(call(child_uptime.add_heartbeat, env, "Acme", "nightly", migrate=True))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            # The first ping brings the heartbeat up through Django, the second takes the
            # fast path: both must see the same address.
            ping_through(web.base_url, ping_id, "192.0.2.7")
            ping_through(web.base_url, ping_id, "192.0.2.7")
        assert json.loads(call(child_uptime.print_ping_addresses, env)) == [seen, seen]


def test_a_forged_forwarded_address_from_this_machine_is_not_what_sign_in_records(
    tmp_path: Path,
) -> None:
    # Two web workers: the forked ones (onwatch/prefork.py) take the same settings.
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="2") as env:
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            port = int(env["ONWATCH_PORT"])
            # As another program on this machine would try to dodge the per-address
            # lock-out: a new address for each wrong password.
            for n in (1, 2):
                forged = {"X-Forwarded-For": f"203.0.113.{n}"}
                assert wrong_password(port, f"nobody{n}@example.com", **forged) == 200
        seen = json.loads(call(child_signin.print_failed_sign_in_addresses, env))
    assert seen == {"audit": ["127.0.0.1", "127.0.0.1"], "lockout": ["127.0.0.1"]}


@pytest.mark.parametrize(
    ("base", "domain", "trusted", "warned"),
    [
        ("https://ops.example.com", "", "", True),  # a proxy of one's own, not named
        ("https://ops.example.com", "", "127.0.0.1", False),
        ("https://ops.example.com", "ops.example.com", "", False),  # onwatch's own Caddy
        ("http://127.0.0.1:8000", "", "", False),  # no proxy
    ],
)
def test_a_start_behind_an_unnamed_proxy_says_whose_address_is_recorded(
    base: str, domain: str, trusted: str, warned: bool
) -> None:
    settings = SimpleNamespace(SITE=base_url(base), DOMAIN=domain, TRUSTED_PROXIES=trusted)
    line = proxy_unnamed(settings)
    assert bool(line) is warned
    if warned:
        assert line == (
            "onwatch: ONWATCH_BASE_URL is https://ops.example.com, but no proxy is named in "
            "ONWATCH_TRUSTED_PROXIES: its requests do not count as HTTPS (its pages answer only "
            "with a line saying so) and sign-ins, lock-outs and the audit log record its "
            "address, not each person's; name it (127.0.0.1 for one on this machine)"
        )


def test_listening_beyond_this_machine_with_a_local_base_url_is_explained(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="1", ONWATCH_HOST="0.0.0.0") as env:
        assert run(["migrate"], env).returncode == 0
        with Running(["web"], env) as web:
            line = web.wait_for("listening on 0.0.0.0", timeout=60)
            assert f"ONWATCH_BASE_URL is {web.base_url}" in line, line
            wait_http(web.base_url + "/health/", timeout=60)
            # What a browser on another machine sends: the address it typed.
            port = env["ONWATCH_PORT"]
            asked = urllib.request.Request(
                f"{web.base_url}/", headers={"Host": f"192.0.2.9:{port}"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(asked, timeout=10)
            assert refused.value.code == 400
            text = refused.value.read().decode()
            assert f"answers at {web.base_url}, not at 192.0.2.9:{port}" in text, text
            assert "set ONWATCH_BASE_URL to it" in text


def scheme_seen(port: int, **headers: str) -> str:
    """Where onwatch sends a request for its front page: "https" when it took the request
    for HTTPS (on to the sign-in page), else the redirect to its https address."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/", headers={"Host": "ops.example.com", **headers})
    answer = connection.getresponse()
    answer.read()
    location = answer.headers.get("Location", "")
    return "https" if location.startswith("/") else location


@pytest.mark.parametrize(
    ("trusted", "forged_is_https"),
    [
        (None, False),  # nobody named: any program on this machine reaches the port
        ("192.0.2.1", False),  # a proxy elsewhere is named: this machine's header is not
        ("127.0.0.1", True),  # a proxy of one's own on this machine, named
    ],
)
def test_x_forwarded_proto_counts_from_trusted_proxies_only(
    tmp_path: Path, trusted: str | None, forged_is_https: bool
) -> None:
    extra = {"ONWATCH_WEB_WORKERS": "1", "ONWATCH_BASE_URL": "https://ops.example.com"}
    if trusted:
        extra["ONWATCH_TRUSTED_PROXIES"] = trusted
    with isolated(tmp_path, migrated=True, **extra) as env, Running(["web"], env):
        port = int(env["ONWATCH_PORT"])
        wait_http(f"http://127.0.0.1:{port}/health/", timeout=60)
        said = scheme_seen(port, **{"X-Forwarded-Proto": "https"})
        plain = scheme_seen(port)
    # Taken for HTTPS, a request gets Secure cookies and HSTS and passes the redirect.
    assert said == ("https" if forged_is_https else "https://ops.example.com/")
    assert plain == "https://ops.example.com/"
