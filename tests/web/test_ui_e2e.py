"""The whole first-run journey in a real browser against a real `onwatch up`: sign up
through the one-time link, enrol TOTP, add an alert channel, send a test, and see the
worker's delivery in the log."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import chromium, sign_up_and_enrol
from tests.support.procs import Running, isolated, wait_http
from tests.support.receivers import WebhookReceiver, wait_until

# Its subject is a browser's journey, not onwatch's database: one of the two passes runs it.
pytestmark = pytest.mark.once


def add_channel_and_send_a_test(page: Page, base: str, url: str) -> None:
    page.goto(base + "/")
    page.get_by_role("navigation", name="Sections").get_by_role(
        "link", name="Alert channels"
    ).click()
    page.get_by_role("link", name="Add a channel").click()
    page.get_by_label("Name").fill("ops webhook")
    page.get_by_label("Apprise URL").fill(url)
    page.get_by_role("button", name="Add channel").click()
    row = page.get_by_role("row", name="ops webhook")
    expect(row).to_contain_text("json")
    # The secret URL is never shown back, not even its path.
    expect(page.locator("main")).not_to_contain_text("/hook")
    row.get_by_role("button", name="Send a test").click()


def test_first_run_journey_in_a_real_browser(tmp_path: Path) -> None:
    with (
        WebhookReceiver() as hooks,
        isolated(tmp_path) as env,
        Running(["up"], env) as up,
        chromium() as browser,
    ):
        link = up.wait_for("/invite/", timeout=60).strip()
        wait_http(up.base_url + "/health/")
        page = browser.new_page()
        sign_up_and_enrol(page, link)
        page.goto(up.base_url + "/")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        expect(page.locator("header")).to_contain_text("Acme Bakery")

        add_channel_and_send_a_test(page, up.base_url, hooks.url())
        # The worker process delivers it to the real receiver...
        wait_until(lambda: len(hooks.hooks) == 1, timeout=30, what="the test webhook")
        assert hooks.hooks[0].json["title"] == "onwatch test notification"
        # ...and the delivery log says so.
        expect(page.get_by_role("heading", name="Delivery log")).to_be_visible()

        def delivered() -> bool:
            page.reload()
            return "delivered" in page.get_by_role("row", name="ops webhook").inner_text()

        wait_until(delivered, timeout=30, what="the delivered row")
        page.screenshot(path=str(tmp_path / "deliveries.png"))

        # The set-up link worked once; now it is void.
        response = browser.new_page().goto(link)
        assert response is not None and response.status == 404
