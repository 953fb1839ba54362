"""A proxy of one's own in front of onwatch, not named in ONWATCH_TRUSTED_PROXIES: every
visitor then looks like the proxy (127.0.0.1), so sign-in limits count them all as one.
Every page says so, the sign-in page first, until the proxy is named."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

BANNER = "onwatch is reached through a proxy it was not told about"


def sign_in_page(remote: str, headers: dict[str, str]) -> str:
    r = Client(REMOTE_ADDR=remote).get("/accounts/login/", headers=headers)
    assert r.status_code == 200
    return r.content.decode()


@pytest.mark.parametrize(
    "headers", [{"x-forwarded-for": "198.51.100.7"}, {"forwarded": "for=198.51.100.7"}]
)
def test_a_request_through_a_proxy_nobody_named_shows_the_warning(
    headers: dict[str, str], settings: Any
) -> None:
    settings.TRUSTED_PROXIES, settings.DOMAIN = "", ""
    page = sign_in_page("127.0.0.1", headers)
    assert BANNER in page and "ONWATCH_TRUSTED_PROXIES" in page


@pytest.mark.parametrize(
    ("remote", "headers", "trusted", "domain"),
    [
        ("127.0.0.1", {}, "", ""),  # a program on this machine, no proxy
        ("127.0.0.1", {"x-forwarded-for": "198.51.100.7"}, "127.0.0.1", ""),  # named
        ("127.0.0.1", {"x-forwarded-for": "198.51.100.7"}, "", "ops.example.com"),  # Caddy
        ("198.51.100.7", {"x-forwarded-for": "203.0.113.1"}, "", ""),  # not from loopback
    ],
)
def test_no_warning_where_addresses_are_seen_as_they_are(
    remote: str, headers: dict[str, str], trusted: str, domain: str, settings: Any
) -> None:
    settings.TRUSTED_PROXIES, settings.DOMAIN = trusted, domain
    assert BANNER not in sign_in_page(remote, headers)


FORWARDED_HTTPS = {"x-forwarded-for": "198.51.100.7", "x-forwarded-proto": "https"}


def test_an_https_base_url_behind_a_proxy_nobody_named_says_why_instead_of_looping(
    settings: Any,
) -> None:
    # Its "this came over HTTPS" is not believed (cli.cmd_web names the proxies uvicorn
    # believes), so a redirect to https would only bring the browser back here.
    settings.TRUSTED_PROXIES, settings.DOMAIN, settings.SECURE_SSL_REDIRECT = "", "", True
    r = Client(REMOTE_ADDR="127.0.0.1").get("/accounts/login/", headers=FORWARDED_HTTPS)
    assert r.status_code == 421
    text = r.content.decode()
    assert "ONWATCH_TRUSTED_PROXIES" in text and "127.0.0.1" in text
    # A probe's /health/ still answers, and a request with no proxy is redirected as ever.
    health = Client(REMOTE_ADDR="127.0.0.1").get("/health/", headers=FORWARDED_HTTPS)
    assert health.status_code == 200
    plain = Client(REMOTE_ADDR="127.0.0.1").get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")


def test_a_named_proxy_is_redirected_as_usual(settings: Any) -> None:
    settings.TRUSTED_PROXIES, settings.DOMAIN, settings.SECURE_SSL_REDIRECT = "127.0.0.1", "", True
    r = Client(REMOTE_ADDR="127.0.0.1").get("/accounts/login/", headers=FORWARDED_HTTPS)
    assert r.status_code == 301
