"""The issue list in a real browser against a real `onwatch up`: issues ticked and resolved
in a release together, an event of an older release leaves them resolved, and one of a
newer release brings its issue back to the (default) unresolved list as a regression."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import chromium, sign_up_and_enrol
from tests.support.procs import Running, isolated, wait_http


def store(base_url: str, dsn: str, kind: str, release: str) -> None:
    key, project = dsn.split("//")[1].split("@")[0], dsn.rsplit("/", 1)[1]
    event = {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": kind, "value": "boom"}]},
    }
    request = urllib.request.Request(
        f"{base_url}/api/{project}/store/?sentry_key={key}", data=json.dumps(event).encode()
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_issues_are_resolved_together_and_only_a_newer_release_reopens_one(
    tmp_path: Path,
) -> None:
    with (
        isolated(tmp_path, migrated=True) as env,
        Running(["up"], env) as up,
        chromium() as browser,
    ):
        link = up.wait_for("/invite/", timeout=60).strip()
        wait_http(up.base_url + "/health/")
        page = browser.new_page()
        sign_up_and_enrol(page, link)
        page.goto(up.base_url + "/errors/add/")
        page.get_by_label("Name").fill("shop")
        page.get_by_role("button", name="Add project").click()
        dsn = page.locator("code.dsn").inner_text().strip()
        project_page = page.url
        for kind in ("KeyError", "ValueError"):
            store(up.base_url, dsn, kind, "1.1.0")

        page.goto(project_page)
        expect(page.locator("p.filters")).to_contain_text("Unresolved (2)")
        page.get_by_label("Choose KeyError: boom").check()
        page.get_by_label("Choose ValueError: boom").check()
        page.get_by_label("Do").select_option("resolve")
        page.get_by_label("Resolved in release").fill("1.2.0")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator(".messages")).to_contain_text("Resolved: 2 issues.")
        expect(page.locator("main")).to_contain_text("No unresolved errors.")
        page.get_by_role("link", name="Resolved (2)").click()
        expect(page.get_by_role("row", name="KeyError: boom")).to_contain_text("Resolved in 1.2.0")

        store(up.base_url, dsn, "KeyError", "1.1.0")  # older than the fix: still resolved
        page.goto(project_page)
        expect(page.locator("main")).to_contain_text("No unresolved errors.")
        store(up.base_url, dsn, "KeyError", "1.2.1")
        page.goto(project_page)
        row = page.get_by_role("row", name="KeyError: boom")
        expect(row).to_contain_text("Regressed in 1.2.1")
        expect(page.locator("main")).not_to_contain_text("ValueError: boom")
