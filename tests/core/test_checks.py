from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from onwatch.config import BaseUrl

# Some third-party checks read the database.
pytestmark = pytest.mark.django_db


def ids() -> set[str]:
    return {m.id or "" for m in run_checks()}


def test_the_default_settings_pass_every_check() -> None:
    assert not {i for i in ids() if i.startswith("onwatch.")}


@override_settings(HOST="0.0.0.0", SITE=BaseUrl("http", "onwatch.example.com", None))
def test_plain_http_beyond_loopback_is_warned_about() -> None:
    assert "onwatch.W001" in ids()


@override_settings(HOST="0.0.0.0", SITE=BaseUrl("https", "onwatch.example.com", None))
def test_https_beyond_loopback_is_fine() -> None:
    assert "onwatch.W001" not in ids()


@override_settings(TIME_ZONE="Mars/Olympus")
def test_a_bad_time_zone_is_an_error() -> None:
    assert "onwatch.E001" in ids()
