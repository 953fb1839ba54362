"""The whole first-run journey in a real browser against a real `onwatch up`."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import chromium, totp_now
from tests.procs import Running, isolated, wait_http

PASSWORD = "a long and unusual passphrase 42"


def sign_up_and_enrol(page: Page, link: str) -> None:
    page.goto(link)
    page.get_by_label("Organization name").fill("Acme Bakery")
    page.get_by_label("Email").fill("owner@acme.example")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    # Nothing but enrolment is reachable before a second factor exists.
    assert "/accounts/2fa/totp/activate" in page.url
    secret = page.locator("#authenticator_secret").input_value()
    page.get_by_label("Authenticator code").fill(totp_now(secret))
    page.get_by_role("button", name="Activate").click()


@pytest.mark.django_db(transaction=True)
def test_owner_signs_up_through_the_link_and_enrols_totp(tmp_path: Path) -> None:
    with isolated(tmp_path) as env, Running(["up"], env) as up, chromium() as browser:
        link = up.wait_for("/invite/", timeout=60).strip()
        wait_http(up.base_url + "/health/")
        page = browser.new_page()
        sign_up_and_enrol(page, link)
        page.goto(up.base_url + "/")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        expect(page.locator("header")).to_contain_text("Acme Bakery")
        # The link worked once; a second use is refused.
        other = browser.new_page()
        response = other.goto(link)
        assert response is not None and response.status == 404
