"""A new monitor in a real browser against a real `onwatch up`: added through its form, it
shows its first check (a failure that has not taken it down yet) within seconds, not after
the hourly roll-up."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import chromium, sign_up_and_enrol
from tests.support.procs import Running, isolated, wait_http
from tests.support.servers import HttpServer


def test_a_new_monitor_shows_its_first_check_at_once(tmp_path: Path) -> None:
    with (
        HttpServer() as web,
        isolated(tmp_path, migrated=True) as env,
        Running(["up"], env) as up,
        chromium() as browser,
    ):
        link = up.wait_for("/invite/", timeout=60).strip()
        wait_http(up.base_url + "/health/")
        page = browser.new_page()
        sign_up_and_enrol(page, link)
        page.goto(up.base_url + "/monitors/add/http/")
        page.locator('[name="name"]').fill("Shop")
        page.locator('[name="config_url"]').fill(web.url("/error"))
        page.get_by_role("button", name="Add monitor").click()
        expect(page.get_by_role("heading", name="Shop")).to_be_visible()

        # The prober checks it within seconds; the page shows that check as it is.
        failed = page.locator("table.checks tr.check-failed")
        for _ in range(30):
            page.reload()
            if failed.count():
                break
            page.wait_for_timeout(500)
        expect(failed.first).to_contain_text("Got status 500, expected 200-299")
        expect(page.locator("main")).to_contain_text("1 of the last 1 checks failed")
        expect(page.locator(".uptime-figures")).to_contain_text("24 hours: 0.00 %")
        # Not down yet (three failures confirm it), and not made to look healthy either.
        expect(page.locator(".monitor-state")).to_contain_text("pending")
        page.goto(up.base_url + "/monitors/")
        expect(page.get_by_role("row", name="Shop")).to_contain_text("0.00 %")
        expect(page.locator("main")).not_to_contain_text("no checks")
