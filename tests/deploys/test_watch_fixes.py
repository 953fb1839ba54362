"""Which answers the watch counts as its release's (watch.py), and what users felt of a
switch that keeps Caddy's count on (switch.py), from answers as Caddy logs them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from onwatch.deploys import agent, caddy, switch, watch
from onwatch.deploys.switch import Machine
from tests.support.switching import site

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it

SLOT, OLD = "127.0.0.1:4001", "127.0.0.1:4002"


def test_the_old_slots_failures_while_it_drains_are_not_the_new_releases() -> None:
    answers = [
        caddy.Answer(101.0, 200, SLOT, 200, 0.01),
        caddy.Answer(101.0, 502, SLOT, None, 0.01),  # its own slot tried: its own
        caddy.Answer(101.0, 502, "", None, 5.0),  # no slot tried: the live one's
        caddy.Answer(101.0, 502, OLD, None, 0.01),  # the draining old slot's dial failure
        caddy.Answer(101.0, 200, OLD, 200, 0.01),
    ]
    found = watch.of_release(answers, SLOT, live_at=100.5)
    assert (found.requests, found.errors) == (3, 2)


def logged(started: float, status: int = 200) -> bytes:
    line = {"ts": started + 0.01, "duration": 0.01, "status": status, "upstream": SLOT}
    return json.dumps({**line, "app_status": status}).encode() + b"\n"


def test_what_users_felt_with_the_count_kept_on_is_the_switchs_own_and_quickly_said(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path)
    log = machine.caddy.request_log("shop.test")
    log.parent.mkdir(parents=True)
    ended = time.time()
    log.write_bytes(logged(ended - 2) + logged(ended - 1, 500) + logged(ended + 5, 500))
    window = switch.Window(old=OLD, ended_at=ended)
    busy, done = threading.Event(), threading.Event()

    def requests_go_on() -> None:  # a busy site: the kept count never falls quiet
        while not done.wait(0.05):
            with log.open("ab") as more:
                more.write(logged(time.time() + 1))
            busy.set()

    writer = threading.Thread(target=requests_go_on)
    writer.start()
    try:
        busy.wait(5)
        began = time.monotonic()
        felt = switch._felt(machine, site(machine), window, "", forget=False)
        took = time.monotonic() - began
    finally:
        done.set()
        writer.join()
    # The answers to requests started after the switch ended are the watch's, not the switch's.
    assert (felt.served, felt.app_errors) == (2, 1)
    assert took < caddy.LOG_WAIT_SECONDS - 0.5, took


def test_the_recent_window_keeps_only_its_last_seconds_by_the_second_they_started() -> None:
    now = 1000.0
    kept = watch.recent_after([[960, 50, 0, 0.5], [985, 10, 1, 0.1]], [], now)
    assert kept == [[985, 10, 1, 0.1]]  # 960 started more than 30 s ago
    more = [caddy.Answer(985.5, 500, SLOT, 500, 0.2), caddy.Answer(999.2, 200, SLOT, 200, 0.1)]
    added = watch.recent_after(kept, agent.summed(more), now)
    assert added == [[985, 11, 2, pytest.approx(0.3)], [999, 1, 0, 0.1]]
