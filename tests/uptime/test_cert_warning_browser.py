"""A certificate warning as a person meets it, in real headless Chromium against a real
`onwatch up` (its prober checking a real local TLS server whose certificate has 5 days
left): add the monitor, be told, see the warning on the dashboard and the monitor list,
then lower the warning days in the form and see it cleared."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import chromium, sign_up_and_enrol
from tests.support.procs import Running, isolated, wait_http
from tests.support.receivers import WebhookReceiver, add_channels, wait_until
from tests.support.servers import HttpServer, make_pki

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

SHOWN = "Warning: The certificate expires in 5 days"


def shows(page: Page, url: str, text: str) -> bool:
    page.goto(url)
    return text in page.locator("main").inner_text()


def test_a_certificate_warning_is_told_shown_and_cleared_in_a_real_browser(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    with (
        HttpServer(pki.expiring) as server,
        WebhookReceiver() as hooks,
        isolated(tmp_path, migrated=True) as env,
        Running(["up"], env) as up,
        chromium() as browser,
    ):
        link = up.wait_for("/invite/", timeout=60).strip()
        wait_http(up.base_url + "/health/")
        page = browser.new_page()
        sign_up_and_enrol(page, link)
        add_channels(env, {"ops": hooks.url()}, org="Acme Bakery")

        page.goto(up.base_url + "/monitors/add/tls/")
        page.locator("#id_name").fill("shop certificate")
        page.get_by_label("Host").fill("localhost")
        page.get_by_label("Port").fill(str(server.port))
        page.get_by_label("Extra trusted authorities").fill(str(pki.ca_file))
        page.get_by_label("Warn when it expires within (days)").fill("14")
        page.get_by_role("button", name="Add monitor").click()
        detail = page.url

        # The prober checks it at once: up, with a warning everyone can see...
        wait_until(lambda: shows(page, detail, SHOWN), timeout=30, what="the warning")
        expect(page.locator(".monitor-state")).to_contain_text("up")

        def row() -> Locator:
            return page.get_by_role("row", name="shop certificate")

        page.goto(up.base_url + "/monitors/")
        expect(row()).to_contain_text(SHOWN)
        page.goto(up.base_url + "/")
        expect(page.locator(".warning-list")).to_contain_text("shop certificate")
        expect(page.locator(".warning-list")).to_contain_text(SHOWN)
        page.screenshot(path=str(tmp_path / "dashboard.png"))
        # ...and a notice of its own, as a warning.
        wait_until(lambda: len(hooks.hooks) == 1, timeout=30, what="the warning notice")
        assert hooks.hooks[0].json["type"] == "warning"

        # Fewer warning days: the next check (at once) judges it again and clears it.
        page.goto(detail)
        page.get_by_role("link", name="Change").click()
        page.get_by_label("Warn when it expires within (days)").fill("3")
        page.get_by_role("button", name="Save").click()
        wait_until(
            lambda: not shows(page, up.base_url + "/monitors/", SHOWN), timeout=30, what="clear"
        )
        expect(row()).to_contain_text("up")
        assert not shows(page, up.base_url + "/", SHOWN)
        wait_until(lambda: len(hooks.hooks) == 2, timeout=30, what="the notice it is over")
        assert hooks.hooks[1].json["type"] == "success"
        assert hooks.hooks[1].json["title"] == "shop certificate: the certificate warning is over"
