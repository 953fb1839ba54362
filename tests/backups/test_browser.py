"""A plan's page and a restore in real headless Chromium against a real `onwatch web`: an
owner signs in with password and TOTP, sees one dot per drill on the RTO chart, walks the
restore confirmation, and watches the page refresh itself until a worker has restored."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support import seeds
from tests.support.browser import chromium, totp_now
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.procs import Running, isolated, wait_http
from tests.support.seeds import DRILLS, EMAIL, PASSWORD

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def seed(tmp_path: Path, env: dict[str, str], damage: bool = False) -> dict[str, Any]:
    """The seeded owner, plan and drills (tests.support.seeds), made in a child process."""
    made = call(seeds.seed_backups, env, str(tmp_path), damage, migrate=True, timeout=240)
    seeded: dict[str, Any] = json.loads(made.strip().splitlines()[-1])
    return seeded


def sign_in(page: Page, secret: str) -> None:
    """The seeded owner, on the sign-in page the first visit was sent to."""
    page.locator("input[name=login]").fill(EMAIL)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.locator("input[name=code]").fill(totp_now(secret))
    page.get_by_role("button", name="Sign In", exact=True).click()


def test_an_owner_sees_the_rto_chart_and_restores_through_the_confirmation(
    tmp_path: Path,
) -> None:
    target = tmp_path / "restored" / "orders.sqlite3"
    with isolated(tmp_path, migrated=True) as env:
        seeded = seed(tmp_path, env)
        with Running(["web"], env) as web, chromium() as browser:
            wait_http(web.base_url + "/health/")
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{web.base_url}/backups/plans/{seeded['plan']}/")
            sign_in(page, seeded["secret"])

            expect(page.get_by_role("heading", name="orders nightly")).to_be_visible()
            chart = page.locator("svg.rto-chart")
            expect(chart).to_be_visible()
            expect(chart.locator("circle.drill")).to_have_count(DRILLS)
            expect(chart.locator("circle.drill.ok")).to_have_count(DRILLS)
            # Drills of a second or two under a 60-minute target: the scale follows them.
            expect(chart.locator("text.target")).to_contain_text("RTO target: 60 min")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 50
            page.screenshot(path=str(tmp_path / "plan.png"), full_page=True)

            page.get_by_role("link", name="Restore…").click()
            expect(page.get_by_role("heading", name="Restore orders nightly")).to_be_visible()
            expect(page.get_by_role("radio")).to_have_count(1)
            expect(page.get_by_role("radio")).to_be_checked()
            page.get_by_label("New path").fill(str(target))
            page.screenshot(path=str(tmp_path / "start.png"), full_page=True)
            page.get_by_role("button", name="Next").click()

            expect(page.get_by_role("heading", name="Confirm the restore")).to_be_visible()
            expect(page.locator("dl.restore-summary")).to_contain_text(str(target))
            confirm = page.get_by_label("Type the plan's name to confirm")
            page.screenshot(path=str(tmp_path / "confirm.png"), full_page=True)
            confirm.fill("orders")
            page.get_by_role("button", name="Restore now").click()
            expect(page.locator(".errorlist")).to_contain_text("Type orders nightly exactly")
            assert not target.exists()
            page.get_by_label("Type the plan's name to confirm").fill("orders nightly")
            page.get_by_role("button", name="Restore now").click()

            expect(page.get_by_role("heading", name="Restore of orders nightly")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text("Waiting for a worker")
            # A worker runs the job; the page refreshes itself until it shows the result.
            call(child_core.run_pending_job, env, "backups.restore")
            expect(page.get_by_role("status")).to_contain_text("Restored.", timeout=20_000)
            expect(page.locator("pre.log")).to_contain_text("restored into")
            page.screenshot(path=str(tmp_path / "restore.png"), full_page=True)
    with closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT count(*) FROM notes").fetchone() == (40,)


def test_a_failed_drill_is_a_red_dot_and_the_overview_says_the_data_is_not_safe(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        seeded = seed(tmp_path, env, damage=True)
        with Running(["web"], env) as web, chromium() as browser:
            wait_http(web.base_url + "/health/")
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{web.base_url}/backups/")
            sign_in(page, seeded["secret"])

            row = page.locator("table.backups tbody tr", has_text="orders nightly")
            expect(row.locator("td.verdict")).to_contain_text("No: last restore drill failed")
            expect(row.locator("td.drill")).to_contain_text("failed")
            expect(row.locator("td.drill")).not_to_contain_text("—")
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

            row.get_by_role("link", name="orders nightly").click()
            chart = page.locator("svg.rto-chart")
            expect(chart.locator("circle.drill")).to_have_count(DRILLS + 1)
            expect(chart.locator("circle.drill.ok")).to_have_count(DRILLS)
            red = chart.locator("circle.drill.bad")
            expect(red).to_have_count(1)
            assert red.get_attribute("fill") == "#c62828"
            # Drawn where it can be seen: inside the chart, above the measured drills.
            dot, box = red.bounding_box(), chart.bounding_box()
            assert dot is not None and box is not None
            assert box["y"] <= dot["y"] < box["y"] + box["height"] / 3
            page.screenshot(path=str(tmp_path / "plan-failed.png"), full_page=True)
