"""A pipeline's page in real headless Chromium, against a real `onwatch web` and a real
worker running the step in its sandbox: a line the step prints is on the page within 1 s
(measured from the step's own clock), in its colours, without a reload."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support import seeds
from tests.support.browser import chromium, sign_in
from tests.support.child import call
from tests.support.deploys import commit
from tests.support.procs import Running, isolated, run, wait_http
from tests.support.seeds import EMAIL, PASSWORD

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

PROMPT_SECONDS = 1.0
# The step prints when it printed (its own clock, the machine's), sleeps, and again.
STEP = """[test]
command = '''
printf 'first %s\\n' "$(date +%s.%N)"
printf '\\033[1;31mred alert\\033[0m then \\033[38;5;33mblue\\033[0m\\n'
sleep 4
printf 'second %s\\n' "$(date +%s.%N)"
sleep 1
'''
"""
# Run in the page: when each line arrived (Date.now(), the same machine's clock).
WATCH = """() => {
  window.arrived = {};
  new MutationObserver(() => {
    for (const line of document.querySelectorAll("#job-log .line")) {
      const word = line.textContent.split(" ")[0];
      if (!(word in window.arrived)) window.arrived[word] = Date.now() / 1000;
    }
  }).observe(document.getElementById("job-log"), {childList: true});
}"""


def test_a_printed_line_reaches_the_pipeline_page_within_a_second_in_colour(
    tmp_path: Path,
) -> None:
    commit(tmp_path / "repo", {"onwatch.toml": STEP}, "Print slowly")
    with isolated(tmp_path, migrated=True) as env:
        seeded = json.loads(call(seeds.seed_jobs, env, migrate=True, timeout=120).split("\n")[-2])
        assert run(["services", "add", "shop", str(tmp_path / "repo")], env).returncode == 0
        with (
            Running(["web"], env) as web,
            Running(["worker"], env) as worker,
            chromium() as browser,
        ):
            wait_http(web.base_url + "/health/")
            worker.wait_for("ready")
            page = browser.new_page()
            page.goto(f"{web.base_url}/services/")
            sign_in(page, EMAIL, PASSWORD, seeded["secret"])
            assert run(["pipelines", "run", "shop"], env).returncode == 0
            page.goto(f"{web.base_url}/pipelines/1/")
            page.evaluate(WATCH)
            log = page.locator("#job-log")
            expect(log).to_contain_text("second", timeout=60_000)
            second = log.locator(".line", has_text=re.compile(r"^second \d"))
            printed = float(second.inner_text().split()[-1])
            late = page.evaluate("window.arrived.second") - printed
            print(f"print → on the page: {late:.3f} s")
            assert 0 <= late < PROMPT_SECONDS, f"{late:.2f} s"

            red = log.locator("span.a-f1.a-bold")
            expect(red).to_have_text("red alert")
            assert red.evaluate("e => getComputedStyle(e).color") == "rgb(205, 0, 0)"
            assert red.evaluate("e => getComputedStyle(e).fontWeight") == "700"
            blue = log.locator("span.a-f33")
            assert blue.evaluate("e => getComputedStyle(e).color") == "rgb(0, 135, 255)"
            # No escape character reaches the page (the command, as typed, is shown as text).
            assert "\x1b" not in log.inner_text()
            assert log.locator(".line", has_text=re.compile(r"^red alert then blue$")).count() == 1

            # At its end the page shows the result by itself: state and steps, not "running".
            page.evaluate("window.stillThisPage = true")
            state = page.locator("dd.state-succeeded")
            expect(state).to_have_text("succeeded", timeout=30_000)
            assert page.evaluate("window.stillThisPage === undefined")  # loaded again
            steps = page.locator("table.steps span.state-succeeded")
            expect(steps).to_have_count(3)
