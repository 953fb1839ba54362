"""A running job's page in real headless Chromium against a real `onwatch web`: new log
lines appear as the job writes them, without reloading, and the job can be stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support import seeds
from tests.support.browser import chromium, totp_now
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.procs import Running, isolated, wait_http
from tests.support.seeds import EMAIL, PASSWORD

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_a_running_jobs_log_grows_on_its_page_without_a_reload_and_it_can_be_stopped(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        made = call(seeds.seed_jobs, env, migrate=True, timeout=120)
        seeded = json.loads(made.strip().splitlines()[-1])
        job = seeded["job"]
        with Running(["web"], env) as web, chromium() as browser:
            wait_http(web.base_url + "/health/")
            page = browser.new_page()
            page.goto(f"{web.base_url}/jobs/{job}/")
            page.locator("input[name=login]").fill(EMAIL)
            page.locator("input[name=password]").fill(PASSWORD)
            page.get_by_role("button", name="Sign In", exact=True).click()
            page.locator("input[name=code]").fill(totp_now(seeded["secret"]))
            page.get_by_role("button", name="Sign In", exact=True).click()

            log = page.locator("#job-log")
            expect(log).to_have_text("10:00:00 copying the first table")
            # A mark on the window survives only if the page is never loaded again.
            page.evaluate("window.stillThisPage = true")
            call(child_core.append_job_line, env, job, "10:00:05 copying the second table")
            expect(log).to_contain_text("10:00:05 copying the second table", timeout=10_000)
            assert page.evaluate("window.stillThisPage === true")

            page.get_by_role("button", name="Stop this job").click()
            stopping = page.get_by_text(f"Stopping job #{job}; it ends within seconds.")
            expect(stopping).to_be_visible()
            expect(page.get_by_text("cancelled this job; it is being stopped")).to_be_visible()
            call(child_core.mark_job_cancelled, env, job)
            expect(page.locator("#job-state")).to_have_text("cancelled", timeout=10_000)
            expect(page.locator("#job-follow-note")).to_contain_text("The job has ended")
