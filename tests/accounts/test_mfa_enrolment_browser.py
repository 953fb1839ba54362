"""Enrolling an authenticator app in a real browser: the QR code on screen stays the one
that is checked, whatever the browser fetches by itself and however many tabs are open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.browser import chromium, sign_up
from tests.support.procs import Running, isolated, run, wait_http
from tests.support.totp import totp_now

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


@contextmanager
def enrolling(tmp_path: Path) -> Iterator[tuple[str, BrowserContext, Page]]:
    """A new owner, signed up in Chromium and looking at the enrolment page."""
    with isolated(tmp_path, migrated=True) as env:
        made = run(["createowner", "--link"], env)
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip().splitlines()[-1]
        with Running(["web"], env) as web, chromium() as browser:
            wait_http(web.base_url + "/health/")
            context = browser.new_context()
            page = context.new_page()
            sign_up(page, link)
            yield web.base_url, context, page


def shown_secret(page: Page) -> str:
    expect(page.get_by_role("heading", name="Activate Authenticator App")).to_be_visible()
    return page.locator("#authenticator_secret").input_value()


def enrol_with(page: Page, secret: str) -> None:
    page.get_by_label("Authenticator code").fill(totp_now(secret))
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("main")).not_to_contain_text("Incorrect code")
    page.wait_for_url("**/accounts/2fa/recovery-codes/")


def fetch(page: Page, path: str) -> list[object]:
    found: list[object] = page.evaluate(
        "path => fetch(path).then(r => [r.status, r.redirected])", path
    )
    return found


def test_the_favicon_and_static_files_leave_the_enrolment_secret_alone(tmp_path: Path) -> None:
    with enrolling(tmp_path) as (base, _, page):
        secret = shown_secret(page)
        # What a browser asks for by itself is answered, never sent to enrolment (where it
        # used to make a new secret behind the QR code on screen).
        page.goto(base + "/favicon.ico")
        assert "/accounts/2fa/" not in page.url
        assert fetch(page, "/favicon.ico") == [200, False]
        assert fetch(page, "/static/onwatch/onwatch.css") == [200, False]
        page.go_back()
        assert shown_secret(page) == secret
        enrol_with(page, secret)
        # The recovery codes' two links read as two, not as one underlined line.
        download = page.get_by_role("link", name="Download codes").bounding_box()
        generate = page.get_by_role("link", name="Generate new codes").bounding_box()
        assert download is not None and generate is not None
        assert generate["x"] - (download["x"] + download["width"]) >= 16
        page.goto(base + "/")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_a_second_tab_shows_the_same_secret_and_the_first_tab_still_enrols(
    tmp_path: Path,
) -> None:
    with enrolling(tmp_path) as (base, context, page):
        first = shown_secret(page)
        other = context.new_page()
        other.goto(base + "/")
        assert "/accounts/2fa/totp/activate" in other.url
        assert shown_secret(other) == first
        # The app scanned the first tab's QR code; its code enrols there.
        enrol_with(page, first)
        other.goto(base + "/")
        expect(other.get_by_role("heading", name="Dashboard")).to_be_visible()
