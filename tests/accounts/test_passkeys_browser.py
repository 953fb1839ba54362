"""Passkeys for real: Chromium's virtual authenticator (a WebAuthn device driven over the
DevTools protocol) enrols a passkey as the only second factor, then signs in with it as the
second step after a password, and on its own without one."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import EMAIL, PASSWORD, chromium, sign_up
from tests.support.procs import Running, isolated, run, wait_http

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def plug_in_a_passkey_device(page: Page) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})


def sign_out(page: Page, base: str) -> None:
    page.locator("header").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(base + "/accounts/login/")


def test_a_passkey_enrols_and_signs_in_with_and_without_a_password(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        made = run(["createowner", "--link"], env)
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip().splitlines()[-1]
        with Running(["web"], env) as web, chromium() as browser:
            base = web.base_url
            wait_http(base + "/health/")
            page = browser.new_page()
            plug_in_a_passkey_device(page)

            # Enrolment offers a passkey beside the authenticator app.
            sign_up(page, link)
            assert "/accounts/2fa/totp/activate" in page.url
            page.get_by_role("link", name="Add a passkey instead").click()
            page.get_by_label("Name").fill("laptop")
            page.get_by_label("Passwordless").check()
            page.get_by_role("button", name="Add").click()
            # The device made a credential and the page sent it: the first second factor
            # brings recovery codes, shown at once.
            page.wait_for_url("**/accounts/2fa/recovery-codes/")
            expect(page.locator("main")).to_contain_text("recovery codes")
            # The passkey counts as a second factor: the console opens.
            page.goto(base + "/")
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            page.goto(base + "/accounts/2fa/webauthn/")
            expect(page.locator("main")).to_contain_text("laptop")

            # Password first, then the passkey as the second step.
            sign_out(page, base)
            page.get_by_label("Email").fill(EMAIL)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign In", exact=True).click()
            page.get_by_role("button", name="Use a security key").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

            # The passkey alone: no password, no code.
            sign_out(page, base)
            page.get_by_role("button", name="Sign in with a passkey").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            expect(page.locator("header")).to_contain_text("Acme Bakery")
