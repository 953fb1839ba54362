"""The dashboard shows the cards that apps register with core (onwatch/core/dashboard.py),
in their order and for the roles that may see them; it names no app itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from onwatch.core.dashboard import remove_card
from onwatch.core.models import Organization
from tests.support.cardapp.apps import CARDS
from tests.support.fixtures import signed_in


def headings(html: str) -> list[str]:
    return re.findall(r"<h2>([^<]+)</h2>", html)


def top_row(html: str) -> list[str]:
    block = re.search(r'<section class="cards">(.*?)</section>', html, re.S)
    assert block, html
    return re.findall(r"<strong>\d+</strong> ([a-z ]+)", block.group(1))


def test_each_apps_cards_appear_in_their_order(members: Any) -> None:
    html = signed_in(members["admin"]).get("/").content.decode()
    assert top_row(html) == ["alert channels", "members", "failed", "interrupted jobs"]
    assert headings(html) == [
        "Monitors",
        "Services",
        "Recent deliveries",
        "Recent background jobs",
        "Latest audit entries",
    ]
    # The hint sits between the monitors and the deliveries, as it always did.
    assert html.index("Nothing is watched yet") < html.index("Nobody hears about trouble yet")
    assert html.index("Nobody hears about trouble yet") < html.index("Recent deliveries")


def test_a_card_the_role_may_not_see_is_left_out(members: Any) -> None:
    html = signed_in(members["viewer"]).get("/").content.decode()
    assert "Latest audit entries" not in headings(html)
    assert "Monitors" in headings(html)


@pytest.fixture
def card_app() -> Iterator[None]:
    """The test-only app installed: Django runs its ready(), which adds its cards."""
    try:
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "tests.support.cardapp"]):
            yield
    finally:
        for name in CARDS:
            remove_card(name)


def test_a_card_registered_by_a_test_only_app_appears(
    card_app: None, org: Organization, members: Any
) -> None:
    viewer = signed_in(members["viewer"]).get("/").content.decode()
    assert f'<p class="weather">Sunny at {org.name}</p>' in viewer
    assert headings(viewer).index("Weather") == headings(viewer).index("Monitors") + 1
    assert "Only admins read this" not in viewer
    admin = signed_in(members["admin"]).get("/").content.decode()
    assert "Only admins read this" in admin
