"""`onwatch errors issues|resolve|unresolve|ignore|merge|split` against a real onwatch that
took its events over HTTP; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from tests.support.procs import Running, isolated, run, wait_http

PASSWORD = "a long enough password for the owner"


def store(base_url: str, dsn: str, kind: str, event_id: str) -> None:
    key, project = dsn.split("//")[1].split("@")[0], dsn.rsplit("/", 1)[1]
    event = {
        "event_id": event_id,
        "release": "1.0.0",
        "exception": {"values": [{"type": kind, "value": "boom"}]},
    }
    request = urllib.request.Request(
        f"{base_url}/api/{project}/store/?sentry_key={key}",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_issues_are_listed_resolved_ignored_merged_and_split(tmp_path: Path) -> None:
    moved = uuid.uuid4().hex
    with isolated(
        tmp_path, migrated=True, ONWATCH_WEB_WORKERS="1", ONWATCH_OWNER_PASSWORD=PASSWORD
    ) as env:
        assert run(["createowner", "--email", "owner@acme.example"], env).returncode == 0
        dsn = run(["errors", "add-project", "shop"], env).stdout.strip()
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            store(web.base_url, dsn, "KeyError", uuid.uuid4().hex)
            store(web.base_url, dsn, "ValueError", moved)
        listed = run(["errors", "issues", "shop"], env)
        resolved = run(["errors", "resolve", "1", "--release", "1.2.0"], env)
        after = run(["errors", "issues", "shop", "--state", "resolved"], env)
        no_condition = run(["errors", "ignore", "2"], env)
        ignored = run(["errors", "ignore", "2", "--events", "10"], env)
        reopened = run(["errors", "unresolve", "2"], env)
        merged = run(["errors", "merge", "1", "2"], env)
        split = run(["errors", "split", "1", moved], env)
        again = run(["errors", "split", "1", moved], env)
        nobody = run(["errors", "resolve", "99"], env)
        bad_state = run(["errors", "issues", "shop", "--state", "gone"], env)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["unresolved"] * 2
    assert resolved.stdout == "1\tresolved\tKeyError: boom\n"
    assert after.stdout.startswith("1\tresolved\t1 event\t")
    assert (no_condition.returncode, no_condition.stderr) == (
        2,
        "onwatch: say until when: --until TIME, --events N or --per-hour N\n",
    )
    assert ignored.stdout == "2\tignored\tValueError: boom\n"
    assert reopened.stdout == "2\tunresolved\tValueError: boom\n"
    assert merged.stdout == "1\t2 events\tKeyError: boom\n"
    assert split.stdout == "2\t1 event\tValueError: boom\n"
    assert (again.returncode, again.stderr.count("\n")) == (2, 1)
    assert f"issue 1 has no event {moved}" in again.stderr
    assert (nobody.returncode, nobody.stderr) == (
        2,
        "onwatch: there is no issue 99; list them with onwatch errors issues PROJECT\n",
    )
    assert bad_state.returncode == 2 and "--state must be one of" in bad_state.stderr
