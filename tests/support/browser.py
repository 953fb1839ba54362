"""Headless Chromium (Debian's, by its executable path) driven through Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.totp import totp_now

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this
# closed network refuses many times a second.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(*extra: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *extra], headless=True)
        try:
            yield browser
        finally:
            browser.close()


__all__ = ["chromium", "totp_now"]


EMAIL = "owner@acme.example"
PASSWORD = "a long and unusual passphrase 42"


def sign_up(page: Page, link: str) -> None:
    page.goto(link)
    page.get_by_label("Organization name").fill("Acme Bakery")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


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


def sign_in(page: Page, email: str, password: str, totp_secret: str) -> None:
    """On the sign-in page a protected page sent us to: password, then the TOTP code."""
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.locator("input[name=code]").fill(totp_now(totp_secret))
    page.get_by_role("button", name="Sign In", exact=True).click()
