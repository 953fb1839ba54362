"""What users felt during a switch, as Caddy counted it, against what real clients sending
requests without pause counted themselves: the small app of tests/support/switch_app.py
under supervisord, behind a real Caddy. The clients run from the moment the switch moves
traffic until the old release has stopped (on_step), the window Caddy counts."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from onwatch.deploys import caddy, procman
from onwatch.deploys import switch as switching
from onwatch.deploys.switch import Felt, Machine, Step, Switch, program_name
from tests.support.load import Load, Tally, fetch
from tests.support.switching import listen_port, release, switch

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it

CLIENTS = 7  # Load's default: 3 kept alive, 1 new connection each time, 1 POST, 2 slow


class Clients:
    """Load from the start of the switch step until the last step of the switch ended;
    `during` runs at the switch step's start, once the clients send."""

    def __init__(
        self, machine: Machine, shop: caddy.Site, during: Callable[[], None] = lambda: None
    ) -> None:
        self.load = Load(listen_port(machine), shop.domain, slow_seconds=0.5)
        self.during = during
        self.tally: Tally | None = None

    def on_step(self, step: Step) -> None:
        if step.name == "switch" and not step.ended:
            self.load.start()
            time.sleep(0.5)
            self.during()
        if step.name == "drain" and step.ended:
            self.tally = self.load.stop()

    def counted(self) -> Tally:
        assert self.tally is not None, "the switch ended before its drain"
        return self.tally


def felt_of(record: Switch) -> Felt:
    assert record.felt is not None
    assert record.felt.unmeasured == "", record.felt.unmeasured
    return record.felt


def test_caddy_counts_what_the_clients_counted_under_steady_load(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("r1"))
    clients = Clients(caddy_machine, caddy_site)
    record = switch(caddy_machine, caddy_site, release("r2"), clients.on_step)
    tally, felt = clients.counted(), felt_of(record)
    assert tally.failed == 0, tally.errors
    assert tally.ok > 50
    # A client may read its last answer a moment before Caddy has logged it.
    assert tally.ok - CLIENTS <= felt.served <= tally.ok
    assert (felt.failed, felt.app_errors, felt.mixed) == (0, 0, 0)
    drain = record.steps[-1]
    assert drain.name == "drain" and felt.drain_seconds is not None
    assert drain.detail == f"drained in {felt.drain_seconds:.1f} s"
    # Each switch empties the log once counted: it never holds more than one switch's.
    assert caddy_machine.caddy.request_log(caddy_site.domain).stat().st_size == 0
    assert not list(caddy_machine.caddy.requests_dir.glob("*.on"))


def test_a_request_still_running_when_the_count_stops_is_counted(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    # Caddy writes a request's line once it has answered: read at once, the count left
    # out each answer of the switch's last moment (bench/deploys.py found one per client).
    switch(caddy_machine, caddy_site, release("r1"))
    answered: list[tuple[int, str]] = []
    last = threading.Thread(
        target=lambda: answered.append(
            fetch(listen_port(caddy_machine), caddy_site.domain, "/slow?s=0.15")
        )
    )

    def one_request_at_the_end(step: Step) -> None:
        if step.name == "drain" and step.ended:
            last.start()
            deadline = time.monotonic() + 10
            while not any(caddy_machine.caddy.in_flight(p) for p in caddy_site.ports):
                assert time.monotonic() < deadline, "Caddy never took the request"
                time.sleep(0.005)

    record = switch(caddy_machine, caddy_site, release("r2"), one_request_at_the_end)
    last.join()
    assert answered == [(200, "r2")]
    assert felt_of(record).served == 1


def test_requests_no_release_answered_are_counted_as_failed(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    first = switch(caddy_machine, caddy_site, release("r1"))

    def old_stops_early() -> None:
        # The old release gone before the new one takes traffic: Caddy holds requests 5 s
        # (try_duration), then answers 503 itself.
        caddy_machine.supervisor.stop(program_name(first.port))
        time.sleep(7)

    clients = Clients(caddy_machine, caddy_site, old_stops_early)
    record = switch(caddy_machine, caddy_site, release("r2"), clients.on_step)
    tally, felt = clients.counted(), felt_of(record)
    assert tally.failed > 0 and all(e.startswith("HTTP 503") for e in tally.errors), tally.errors
    assert felt.failed == tally.failed
    assert felt.app_errors == 0
    assert tally.ok + tally.failed - CLIENTS <= felt.served <= tally.ok + tally.failed


def test_errors_the_app_sent_are_counted_apart(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("r1"))
    clients = Clients(caddy_machine, caddy_site)
    record = switch(caddy_machine, caddy_site, release("r2", STATUS="500"), clients.on_step)
    tally, felt = clients.counted(), felt_of(record)
    app_errors = sum(n for e, n in tally.errors.items() if e.startswith("HTTP 500 r2"))
    assert app_errors > 0 and app_errors == tally.failed, tally.errors
    # Caddy logs the last answers a moment after the clients read them.
    assert app_errors - CLIENTS <= felt.app_errors <= app_errors
    assert felt.failed == 0


def test_answers_of_the_old_release_after_the_switch_are_counted(
    caddy_machine: Machine, caddy_site: caddy.Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old release, chosen again and again, never drains: the drain waits its whole
    # limit, then cuts it off. A few seconds of it show the same as the real 30.
    monkeypatch.setattr(switching, "DRAIN_SECONDS", 3.0)
    first = switch(caddy_machine, caddy_site, release("r1"))
    assert first.port == caddy_site.ports[0]  # first in Caddy's list: it takes all it can
    slot = caddy_machine.caddy.slots_dir / str(first.port)
    done = threading.Event()

    def turned_on_again() -> None:
        # As if Caddy had not heard the old release was off: it keeps choosing it.
        while not done.is_set():
            if not slot.exists():
                slot.write_text("r1\n")
            time.sleep(0.01)

    keeper = threading.Thread(target=turned_on_again, daemon=True)
    clients = Clients(caddy_machine, caddy_site, keeper.start)
    try:
        record = switch(caddy_machine, caddy_site, release("r2"), clients.on_step)
    finally:
        done.set()
    tally, felt = clients.counted(), felt_of(record)
    assert 0 < felt.mixed <= tally.answers["r1"]
    assert felt.failed == tally.failed, tally.errors


def test_a_caddy_restarted_during_the_switch_is_not_measured(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("r1"))
    killed: list[int] = []

    def kill_caddy(step: Step) -> None:
        status = caddy_machine.supervisor.status(caddy.PROGRAM)
        if step.name == "switch" and step.ended and status is not None:
            os.kill(status.pid, signal.SIGKILL)  # supervisord starts it again
            killed.append(status.pid)

    record = switch(caddy_machine, caddy_site, release("r2"), kill_caddy)
    assert killed and record.felt is not None
    assert record.felt.unmeasured == "Caddy was restarted during the switch"


def test_a_caddy_without_request_logs_is_not_measured(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("r1"))
    caddy_machine.caddy.request_log(caddy_site.domain).unlink()
    record = switch(caddy_machine, caddy_site, release("r2"))
    assert record.felt is not None
    assert record.felt.unmeasured == "Caddy keeps no request log for shop.test"
    assert [s.name for s in record.steps][-2:] == ["switch", "drain"]


def test_a_switch_while_supervisord_does_not_answer_is_not_measured(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("r1"))
    supervisor = caddy_machine.supervisor
    assert isinstance(supervisor, procman.Supervisor)
    socket = supervisor.socket
    away = socket.with_name("away.sock")

    def supervisord_unreachable(step: Step) -> None:
        # Caddy serves on; only whether it restarted cannot be asked.
        if step.name == "health gate" and step.ended:
            socket.rename(away)

    try:
        record = switch(caddy_machine, caddy_site, release("r2"), supervisord_unreachable)
    finally:
        if away.exists():
            away.rename(socket)
    assert record.felt is not None
    assert record.felt.unmeasured == "whether Caddy restarted during the switch is unknown"
    # The old release could not be stopped without supervisord: said, not hidden.
    assert "could not be stopped" in record.warning
