"""A running job's page in real headless Chromium through a real Caddy in front of a real
`onwatch web`: Caddy is killed and started again while the job writes, and the browser's
own reconnection (EventSource, Last-Event-ID) brings every line, once, without a reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support import seeds
from tests.support.browser import chromium, sign_in
from tests.support.caddy import reverse_proxy
from tests.support.child import call
from tests.support.child import logs as child_logs
from tests.support.procs import Running, isolated, wait_http
from tests.support.seeds import EMAIL, PASSWORD

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_the_page_resumes_every_line_after_caddy_drops_the_stream(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        seeded = json.loads(call(seeds.seed_jobs, env, migrate=True, timeout=120).split("\n")[-2])
        job = seeded["job"]
        with (
            Running(["web"], env) as web,
            reverse_proxy(tmp_path / "caddy", int(env["ONWATCH_PORT"])) as caddy,
            chromium() as browser,
        ):
            wait_http(web.base_url + "/health/")
            page = browser.new_page()
            page.goto(f"{caddy.base_url}/jobs/{job}/")
            sign_in(page, EMAIL, PASSWORD, seeded["secret"])
            log = page.locator("#job-log")
            expect(log).to_have_text("10:00:00 copying the first table")
            page.evaluate("window.stillThisPage = true")
            call(child_logs.append_lines, env, job, ["before the drop"])
            expect(log).to_contain_text("before the drop", timeout=5_000)

            caddy.kill()
            note = page.locator("#job-follow-note")
            expect(note).to_contain_text("trying again", timeout=10_000)
            call(child_logs.append_lines, env, job, ["while away 1", "while away 2"])
            caddy.start()
            expect(log).to_contain_text("while away 2", timeout=15_000)
            expect(note).to_have_text("New lines appear here as the job writes them.")
            call(child_logs.append_lines, env, job, ["after the return"])
            expect(log).to_contain_text("after the return", timeout=5_000)

            lines = log.locator(".line").all_inner_texts()
            assert lines == [
                "10:00:00 copying the first table",
                "before the drop",
                "while away 1",
                "while away 2",
                "after the return",
            ]
            assert [
                int(n) for n in log.locator(".line").evaluate_all("ls => ls.map(l => l.dataset.n)")
            ] == [1, 2, 3, 4, 5]
            assert page.evaluate("window.stillThisPage === true")
