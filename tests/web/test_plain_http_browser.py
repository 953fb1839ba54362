"""A plain-http ONWATCH_BASE_URL on another machine's name: refused at start-up with both
ways out, or, when chosen on a trusted network, sign-in works in a real browser and every
page says it is plain HTTP. Chromium reaches onwatch by a name that is not loopback
(mapped to 127.0.0.1), so it treats the site as any machine on the network."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import chromium
from tests.support.procs import Running, isolated, run, wait_http

HOST = "onwatch.lan"
PASSWORD = "a long and unusual passphrase 42"
WARNING = "reached over plain HTTP"


def network_url(env: dict[str, str]) -> str:
    return f"http://{HOST}:{env['ONWATCH_PORT']}"


def test_plain_http_to_another_machine_is_refused_in_one_line_naming_both_ways_out(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path) as env:
        env["ONWATCH_BASE_URL"] = network_url(env)
        for command in (["up"], ["web"]):
            done = run(command, env, timeout=30)
            assert done.returncode == 2, done.stdout + done.stderr
            [line] = done.stderr.strip().splitlines()
            assert line.startswith(f"onwatch: ONWATCH_BASE_URL={network_url(env)} is plain HTTP")
            assert f"ONWATCH_BASE_URL=https://{HOST}" in line
            assert "ONWATCH_ALLOW_PLAIN_HTTP=true" in line
        assert not (tmp_path / "data").exists()


def test_chosen_plain_http_signs_in_in_a_browser_and_warns_on_every_page(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_ALLOW_PLAIN_HTTP="true") as env:
        base = network_url(env)
        env["ONWATCH_BASE_URL"] = base
        made = run(["createowner", "--link"], env)
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip().splitlines()[-1]
        assert link.startswith(base + "/invite/")
        rules = f"--host-resolver-rules=MAP {HOST} 127.0.0.1"
        with Running(["web"], env) as web, chromium(rules) as browser:
            wait_http(web.base_url + "/health/")
            page = browser.new_page()
            page.goto(link)
            page.get_by_label("Organization name").fill("Acme Bakery")
            page.get_by_label("Email").fill("owner@acme.example")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_label("Password again").fill(PASSWORD)
            page.get_by_role("button", name="Create account").click()
            page.wait_for_load_state()
            # Before the fix the browser dropped the Secure cookies and the form failed here.
            expect(page.locator("body")).not_to_contain_text("CSRF verification failed")
            # The session held: the signed-in owner is sent on to enrol a second factor.
            page.wait_for_url(f"{base}/accounts/2fa/totp/activate**")
            expect(page.locator("header")).to_contain_text("Acme Bakery")
            expect(page.get_by_role("alert")).to_contain_text(WARNING)
            # Signed out too: the sign-in page carries the same warning.
            stranger = browser.new_page()
            stranger.goto(base + "/accounts/login/")
            expect(stranger.get_by_role("alert")).to_contain_text(WARNING)
