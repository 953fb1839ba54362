"""A running job's log as server-sent events from a real `onwatch web`: each line an event
whose id is the line's, sent within a second of being written; a reconnect with
Last-Event-ID resumes with no line lost or repeated; the stream ends with the job's state.
Only members of the job's organization may read it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.caddy import reverse_proxy
from tests.support.child import call
from tests.support.child import logs as child_logs
from tests.support.procs import Running, isolated, wait_http
from tests.support.sse import Event, Stream

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

# The bound: a printed line is on the page within 1 s.
PROMPT_SECONDS = 1.0


@contextmanager
def web_with_job(tmp_path: Path, **extra: str) -> Iterator[tuple[Running, dict[str, Any]]]:
    with isolated(tmp_path, migrated=True, **extra) as env:
        seeded = json.loads(call(child_logs.seed_streams, env, migrate=True, timeout=120))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/")
            yield web, seeded


def append(web: Running, job: int, *lines: str) -> float:
    """When the lines were committed."""
    return float(call(child_logs.append_lines, web.env, job, list(lines)))


def timed_append(web: Running, job: int, stream: Stream, text: str) -> tuple[Event, float]:
    """The event of a line appended by another process, and how long after its commit
    it arrived: the stream is read while that process still runs (it takes a while to
    exit), as a browser would."""
    with ThreadPoolExecutor(1) as pool:
        written = pool.submit(append, web, job, text)
        [event] = stream.events(1, timeout=60)
        return event, event.at - written.result()


def test_lines_stream_promptly_resume_after_a_reconnect_and_end_with_the_state(
    tmp_path: Path,
) -> None:
    with web_with_job(tmp_path) as (web, seeded):
        job, cookie = seeded["job"], seeded["cookie"]
        path = f"/jobs/{job}/events/"
        stream = Stream(web.base_url, path + "?after=0", cookie)
        assert stream.status == 200
        assert stream.header("Content-Type").startswith("text/event-stream")
        assert stream.header("Cache-Control") == "no-cache"
        first = stream.events(3)
        assert [json.loads(e.data) for e in first] == [
            {"n": 1, "html": "one"},
            {"n": 2, "html": '<span class="a-f2">two</span> &lt;b&gt;'},
            {"n": 3, "html": "three"},
        ]
        ids = [int(e.id) for e in first]
        assert ids == sorted(ids) and len(set(ids)) == 3

        four, late = timed_append(web, job, stream, "four")
        assert json.loads(four.data) == {"n": 4, "html": "four"}
        assert late < PROMPT_SECONDS, f"{late:.2f} s"
        stream.close()

        # Written while nobody listens; the browser comes back with the last id it had
        # (the header wins over the page's ?after=).
        append(web, job, "five", "six")
        again = Stream(web.base_url, path + "?after=0", cookie, last_id=four.id)
        resumed = again.events(2)
        assert [json.loads(e.data)["n"] for e in resumed] == [5, 6]
        assert [json.loads(e.data)["html"] for e in resumed] == ["five", "six"]
        assert int(resumed[0].id) > int(four.id)

        append(web, job, "seven")  # the job's last line, just before it ends: still sent
        call(child_logs.end_job, web.env, job, "succeeded")
        [seven, end] = again.events(2)
        assert json.loads(seven.data)["html"] == "seven"
        assert (end.event, json.loads(end.data)) == ("end", {"state": "succeeded"})
        assert again.next(5) is None  # closed: the browser must not reconnect


def test_the_stream_is_the_organizations_own_and_refuses_a_bad_position(
    tmp_path: Path,
) -> None:
    with web_with_job(tmp_path) as (web, seeded):
        job, cookie = seeded["job"], seeded["cookie"]
        assert Stream(web.base_url, f"/jobs/{seeded['hidden']}/events/", cookie).status == 404
        anonymous = Stream(web.base_url, f"/jobs/{job}/events/", "")
        assert anonymous.status == 302 and "/accounts/login/" in anonymous.header("Location")
        bad = Stream(web.base_url, f"/jobs/{job}/events/", cookie, last_id="x")
        assert bad.status == 400
        assert bad.response.read() == b"after (or Last-Event-ID) must be the number of a log line\n"
        for odd in ("%C2%B2", "9" * 5000):  # a digit to Python, or too long for one
            assert Stream(web.base_url, f"/jobs/{job}/events/?after={odd}", cookie).status == 400
        started = time.monotonic()
        # The first bytes come at once, before any line: a proxy passes the stream on.
        quiet = Stream(web.base_url, f"/jobs/{job}/events/?after=999999", cookie)
        event = quiet.next(2)
        assert event is not None and event.comments == [f"following job {job}"]
        assert time.monotonic() - started < 2


def test_a_stream_ends_once_its_viewer_signed_out_or_left_the_organization(
    tmp_path: Path,
) -> None:
    """Permission is asked again while the stream stays open, not only when it opened: a
    member removed from the organization, or signed out, stops getting lines within
    ONWATCH_LOG_STREAM_RECHECK_SECONDS; a viewer who still may see the job keeps getting
    them. Rechecked every 2 s here, not the default 15, for a shorter wait."""
    recheck = 2
    with web_with_job(tmp_path, ONWATCH_LOG_STREAM_RECHECK_SECONDS=str(recheck)) as (web, seeded):
        job, cookie = seeded["job"], seeded["cookie"]
        path = f"/jobs/{job}/events/?after=0"
        removed = call(child_logs.add_viewer, web.env, "removed@bakery.example").strip()
        leaving = call(child_logs.add_viewer, web.env, "leaving@bakery.example").strip()
        streams = {
            who: Stream(web.base_url, path, c, timeout=60)
            for who, c in (("kept", cookie), ("removed", removed), ("signed out", leaving))
        }
        for stream in streams.values():
            assert len(stream.events(3)) == 3
        call(child_logs.remove_member, web.env, "removed@bakery.example")
        call(child_logs.sign_out, web.env, leaving)
        changed = time.monotonic()
        append(web, job, "after the change")
        kept = streams["kept"].events(1)
        assert json.loads(kept[0].data)["html"] == "after the change"
        for who in ("removed", "signed out"):
            [first] = streams[who].events(1, timeout=recheck + 30)
            # The line written just after the change may still go out before the check.
            closed = first if first.event == "closed" else streams[who].events(1)[0]
            assert closed.event == "closed", who
            assert "You can no longer see this job" in json.loads(closed.data)["reason"]
            assert time.monotonic() - changed < recheck + 10, who
            assert streams[who].next(5) is None, f"{who}: the stream went on"
        # The one still allowed went through the same checks and still follows.
        append(web, job, "still here")
        [line] = streams["kept"].events(1)
        assert json.loads(line.data)["html"] == "still here"
        # Reconnecting (as EventSource does) is refused outright.
        assert Stream(web.base_url, path, leaving).status == 302
        assert Stream(web.base_url, path, removed).status == 403


def test_through_caddy_lines_arrive_promptly_and_resume_after_caddy_drops_them(
    tmp_path: Path,
) -> None:
    with web_with_job(tmp_path) as (web, seeded):
        job, cookie = seeded["job"], seeded["cookie"]
        path = f"/jobs/{job}/events/?after=0"
        with reverse_proxy(tmp_path / "caddy", int(web.env["ONWATCH_PORT"])) as caddy:
            stream = Stream(caddy.base_url, path, cookie)
            assert stream.status == 200
            assert stream.header("Content-Type").startswith("text/event-stream")
            assert [json.loads(e.data)["n"] for e in stream.events(3)] == [1, 2, 3]
            four, late = timed_append(web, job, stream, "four")
            assert json.loads(four.data)["html"] == "four"
            assert late < PROMPT_SECONDS, f"{late:.2f} s via Caddy"

            caddy.kill()
            assert stream.next(5) is None  # dropped
            append(web, job, "five", "six")
            caddy.start()
            again = Stream(caddy.base_url, path, cookie, last_id=four.id)
            resumed = again.events(2)
            assert [json.loads(e.data) for e in resumed] == [
                {"n": 5, "html": "five"},
                {"n": 6, "html": "six"},
            ]
            seven, late = timed_append(web, job, again, "seven")
            assert json.loads(seven.data)["n"] == 7
            assert late < PROMPT_SECONDS, f"{late:.2f} s via Caddy after the reconnect"
