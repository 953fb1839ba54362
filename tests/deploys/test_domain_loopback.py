"""With a domain (`onwatch up --domain`), a real `onwatch web` on its loopback port as
Caddy and this machine's other programs reach it: what was handed out before the domain
keeps working, and only Caddy's token makes a request HTTPS or names its client."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import signin as child_signin
from tests.support.child import uptime as child_uptime
from tests.support.procs import Running, django, isolated
from tests.support.signin import wrong_password

# Its subject is Caddy and the loopback port's trust, not onwatch's database:
# one of the two passes runs it.
pytestmark = pytest.mark.once

DOMAIN = "onwatch.localhost"
CADDY_PORT = "8443"  # named in redirects only: no Caddy runs here


def ask(
    env: dict[str, str], method: str, path: str, body: bytes = b"", **headers: str
) -> http.client.HTTPResponse:
    port = int(env["ONWATCH_PORT"])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers={"Host": f"localhost:{port}", **headers})
    answer = connection.getresponse()
    answer.read()
    return answer


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """`onwatch web` with the domain set, and one heartbeat's ping id."""
    with isolated(
        tmp_path, migrated=True, ONWATCH_DOMAIN=DOMAIN, ONWATCH_CADDY_HTTPS_PORT=CADDY_PORT
    ) as env:
        [ping_id] = json.loads(call(child_uptime.add_heartbeats, env, 1, migrate=True))
        with Running(["web"], env):
            deadline = time.monotonic() + 60
            while True:
                try:
                    ask(env, "GET", "/health/")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield env, ping_id


def stored(env: dict[str, str], ping_id: str) -> list[str]:
    """The remote addresses of the pings stored for `ping_id`, oldest first."""
    code = f"""
        from onwatch.uptime.models import Ping
        rows = Ping.objects.filter(monitor__ping_id="{ping_id}").order_by("id")
        print(json.dumps([p.remote_addr for p in rows]))
    """
    return list(json.loads(django(code, env)))


def test_old_loopback_ping_urls_and_dsns_are_answered_and_pages_go_to_the_site(
    web: tuple[dict[str, str], str],
) -> None:
    env, ping_id = web
    # As `curl -fsS http://localhost:8000/ping/<id>` from a job made before the domain:
    # twice, so the second may take the fast route once the first taught it.
    for _ in range(2):
        assert ask(env, "GET", f"/ping/{ping_id}").status == 200
    assert stored(env, ping_id) == ["127.0.0.1", "127.0.0.1"]
    # An SDK's POST to an old DSN reaches the ingest view (no project 999999: refused
    # there, not redirected where SDKs do not follow).
    envelope = ask(env, "POST", "/api/999999/envelope/", b"{}\n{}\n")
    assert envelope.status not in (301, 302, 307, 308), envelope.headers
    # Pages still go to HTTPS, at the site's name and Caddy's port, not the host asked.
    page = ask(env, "GET", "/accounts/login/")
    assert page.status == 301
    assert page.headers["Location"] == f"https://{DOMAIN}:{CADDY_PORT}/accounts/login/"


def test_forwarded_headers_count_only_with_caddys_token(
    web: tuple[dict[str, str], str],
) -> None:
    env, ping_id = web
    token = django("from django.conf import settings\nprint(settings.PROXY_TOKEN)", env).strip()
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    # Caddy's requests, twice: the fast route learns their answer (HSTS in it).
    for _ in range(2):
        by_caddy = ask(env, "GET", f"/ping/{ping_id}", b"", **forged, **{"X-Onwatch-Proxy": token})
        assert by_caddy.status == 200
        # A local name: HSTS for a day and for itself alone, never for names below it.
        assert by_caddy.headers["Strict-Transport-Security"] == "max-age=86400"
    # Another program on this machine, straight to the loopback port, with the same
    # headers and a wrong token: neither its address nor HTTPS is taken from it.
    for _ in range(2):
        other = ask(env, "GET", f"/ping/{ping_id}", b"", **forged, **{"X-Onwatch-Proxy": "guess"})
        assert other.status == 200
        assert other.headers["Strict-Transport-Security"] is None
    assert stored(env, ping_id) == ["203.0.113.9"] * 2 + ["127.0.0.1"] * 2


def test_caddys_forwarded_address_is_what_sign_in_records(
    web: tuple[dict[str, str], str],
) -> None:
    env, _ = web
    token = django("from django.conf import settings\nprint(settings.PROXY_TOKEN)", env).strip()
    site = f"https://{DOMAIN}:{CADDY_PORT}"
    # What Caddy sends on: the person's address (after any they wrote themselves), HTTPS.
    by_caddy = {
        "Host": f"{DOMAIN}:{CADDY_PORT}",
        "Origin": site,
        "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Onwatch-Proxy": token,
    }
    assert wrong_password(int(env["ONWATCH_PORT"]), "nobody@example.com", **by_caddy) == 200
    seen = json.loads(call(child_signin.print_failed_sign_in_addresses, env))
    assert seen == {"audit": ["203.0.113.9"], "lockout": ["203.0.113.9"]}


def test_health_answers_a_probe_on_this_machine_without_a_redirect(
    web: tuple[dict[str, str], str],
) -> None:
    env, _ = web
    port = int(env["ONWATCH_PORT"])
    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    probe.request("GET", "/health/", headers={"Host": f"127.0.0.1:{port}"})
    answer = probe.getresponse()
    # As little as it ever said: no page, no cookie, and no HSTS over plain HTTP.
    assert (answer.status, answer.read()) == (200, b"ok")
    assert answer.headers["Content-Type"] == "text/plain"
    assert answer.headers["Set-Cookie"] is None
    assert answer.headers["Strict-Transport-Security"] is None
    # Other pages still go to HTTPS.
    assert ask(env, "GET", "/accounts/login/").status == 301
