"""A request for a Host onwatch does not answer to: someone on this machine is told the
address it answers at and how to change it; anyone else gets a plain 400 that gives away
neither the address nor the settings."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def asked_for_another_host(
    client_address: str, forwarded: dict[str, str] | None = None
) -> tuple[int, str]:
    headers = {"host": "elsewhere.example", **(forwarded or {})}
    r = Client(REMOTE_ADDR=client_address).get("/", headers=headers)
    return r.status_code, r.content.decode()


@pytest.mark.parametrize("client_address", ["127.0.0.1", "::1"])
def test_someone_on_this_machine_is_told_which_address_to_use(client_address: str) -> None:
    status, text = asked_for_another_host(client_address)
    assert status == 400
    assert f"answers at {settings.SITE_ROOT}, not at elsewhere.example" in text, text
    assert "set ONWATCH_BASE_URL to it" in text


@pytest.mark.parametrize("client_address", ["192.0.2.9", "2001:db8::9", "10.0.0.5"])
def test_anyone_else_gets_a_plain_400_without_the_address(client_address: str) -> None:
    status, text = asked_for_another_host(client_address)
    assert status == 400
    assert settings.SITE_ROOT not in text and "ONWATCH_" not in text, text
    assert "Bad Request" in text, text


@pytest.mark.parametrize(
    "forwarded",
    [
        {"x-forwarded-for": "198.51.100.7"},
        {"forwarded": "for=198.51.100.7"},
        {"x-real-ip": "198.51.100.7"},
    ],
)
def test_someone_reaching_it_through_a_proxy_nobody_named_gets_the_plain_400(
    forwarded: dict[str, str],
) -> None:
    """A proxy of one's own on this machine, not named in ONWATCH_TRUSTED_PROXIES, arrives
    from loopback on behalf of anyone on the internet."""
    status, text = asked_for_another_host("127.0.0.1", forwarded)
    assert status == 400
    assert settings.SITE_ROOT not in text and "ONWATCH_" not in text, text
