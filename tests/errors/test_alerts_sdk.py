"""A crash loop sent by the real sentry-sdk to a real `onwatch web`, with a real worker
delivering to a local webhook receiver: one alert for the new issue, not one per event."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import ROOT, Running, isolated, run, wait_http
from tests.support.receivers import WebhookReceiver, add_channels, wait_until

PASSWORD = "a long enough password for the owner"


def test_a_crash_loop_through_the_sdk_sends_one_alert_linking_the_issue(tmp_path: Path) -> None:
    with (
        WebhookReceiver() as hooks,
        isolated(
            tmp_path, migrated=True, ONWATCH_WEB_WORKERS="1", ONWATCH_OWNER_PASSWORD=PASSWORD
        ) as env,
    ):
        made = run(["createowner", "--email", "owner@acme.example", "--org", "Acme"], env)
        assert made.returncode == 0, made.stderr
        dsn = run(["errors", "add-project", "shop"], env).stdout.strip()
        add_channels(env, {"ops": hooks.url()}, org="Acme")
        with Running(["web"], env) as web, Running(["worker"], env):
            wait_http(web.base_url + "/health/", timeout=60)
            base_url = web.base_url
            sent = subprocess.run(
                [sys.executable, "-m", "tests.support.sentry_send", dsn, "crash", "--count", "40"],
                cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            assert sent.stdout.count("\n") == 41  # 40 event ids, then "flushed"
            wait_until(lambda: len(hooks.hooks) >= 1, timeout=60, what="the alert")
            time.sleep(3)  # time for any further (wrong) alert to arrive
        listed = run(["errors", "issues", "shop"], env)
    assert len(hooks.hooks) == 1, [h.json["title"] for h in hooks.hooks]
    alert = hooks.hooks[0].json
    assert alert["title"].startswith("shop: new error ValueError: order ")
    assert "in shop@1.2.3" in alert["message"]
    issue_id = listed.stdout.split("\t")[0]
    assert "\t40 events\t" in listed.stdout
    assert f"Details: {base_url}/errors/issues/{issue_id}/" in alert["message"]
