"""The switch with real components: the small app of tests/support/switch_app.py under
supervisord, behind Caddy, with clients sending requests without pause throughout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from onwatch.deploys import caddy, procman
from onwatch.deploys.switch import (
    Gate,
    Machine,
    Step,
    SwitchFailed,
    left_behind,
    program_name,
    stop_serving,
)
from tests.support.load import Load, fetch
from tests.support.switching import QUICK_GATE, listen_port, release, switch

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it


@pytest.mark.usefixtures("own_timings")
def test_switches_under_load_fail_no_request(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    """With onwatch's own gate, Caddy health interval and settling time, as it ships (the
    other tests' are quicker: tests.support.switching.QUICK_GATE)."""
    switch(caddy_machine, caddy_site, release("r1"), gate=Gate())
    load = Load(listen_port(caddy_machine), caddy_site.domain, slow_seconds=1.5).start()
    try:
        records = [
            switch(caddy_machine, caddy_site, release(f"r{n}"), gate=Gate()) for n in (2, 3, 4)
        ]
    finally:
        tally = load.stop()
    assert tally.failed == 0, tally.errors
    assert tally.ok > 100 and tally.slow_ok > 0
    # Each release answered in turn, and the last one alone answers now.
    assert {"r1", "r2", "r3", "r4"} <= set(tally.answers)
    assert {fetch(listen_port(caddy_machine), caddy_site.domain)[1] for _ in range(10)} == {"r4"}
    for record in records:
        assert [s.name for s in record.steps] == ["start", "health gate", "switch", "drain"]
        assert all(s.ok and s.ended for s in record.steps), record.steps
    # The old releases were stopped and removed: Caddy and the live release run.
    running = {s.name for s in caddy_machine.supervisor.all()}
    assert running == {caddy.PROGRAM, program_name(records[-1].port)}


def test_a_running_request_finishes_on_the_old_release(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    switch(caddy_machine, caddy_site, release("old"))
    load = Load(
        listen_port(caddy_machine), caddy_site.domain, 0, 0, 0, slow=4, slow_seconds=3
    ).start()
    try:
        record = switch(caddy_machine, caddy_site, release("new"))
    finally:
        tally = load.stop()
    assert tally.failed == 0, tally.errors
    assert tally.answers["old"] > 0 and tally.slow_ok == sum(tally.answers.values())
    drain = record.steps[-1]
    assert drain.name == "drain" and drain.ok and drain.detail.startswith("drained in")


def test_a_release_that_never_gets_healthy_leaves_the_old_one_serving(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    first = switch(caddy_machine, caddy_site, release("r1"))
    steps: list[Step] = []
    # What each call said at that moment (the step itself changes afterwards).
    said: list[tuple[str, bool, str]] = []

    def on_step(step: Step) -> None:
        steps.append(step)
        said.append((step.name, step.ended is None, step.detail))

    load = Load(listen_port(caddy_machine), caddy_site.domain).start()
    try:
        with pytest.raises(SwitchFailed) as failed:
            switch(
                caddy_machine,
                caddy_site,
                release("broken", HEALTH="fail"),
                on_step,
                replace(QUICK_GATE, seconds=3),
            )
    finally:
        tally = load.stop()
    message = str(failed.value)
    assert "\n" not in message
    assert message == (
        # With what the app said: switch_app.py answers its health checks "health".
        "broken never answered 200 3 times in a row on /health within 3 s (last: HTTP 500 "
        "'health'); "
        "it was stopped; r1 still serves shop.test"
    )
    assert tally.failed == 0, tally.errors
    assert set(tally.answers) == {"r1"}
    gate = failed.value.record.steps[-1]
    assert gate.name == "health gate" and not gate.ok and gate in steps
    # While it waited, the deploy's page said for what and how long at most.
    waiting = "waiting for 3 answers of 200 in a row on /health, at most 3 s"
    assert ("health gate", True, waiting) in said and gate.detail == message
    assert caddy_machine.supervisor.status(program_name(failed.value.record.port)) is None
    assert caddy_machine.caddy.live_label(first.port) == "r1"
    assert caddy_machine.caddy.live_label(failed.value.record.port) is None


def test_a_release_that_exits_at_once_is_refused_quickly(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    broken = release("crash")
    broken = type(broken)("crash", "echo 'no module named shop' >&2; exit 3", broken.directory)
    with pytest.raises(SwitchFailed) as failed:
        switch(caddy_machine, caddy_site, broken, gate=replace(QUICK_GATE, seconds=30))
    assert "crash did not start" in str(failed.value)
    assert "no module named shop" in str(failed.value)
    assert str(failed.value).endswith("nothing serves shop.test yet")
    assert fetch(listen_port(caddy_machine), caddy_site.domain)[0] == 503


def test_a_port_taken_by_another_program_is_named(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", caddy_site.ports[0]))
        other.listen()
        with pytest.raises(SwitchFailed) as failed:
            switch(caddy_machine, caddy_site, release("r1"))
    assert (
        f"port {caddy_site.ports[0]} of shop.test is taken by a program onwatch did not start"
        in (str(failed.value))
    )


def test_two_switches_of_one_site_never_interleave(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    import threading

    outcomes: list[str] = []

    def run(label: str) -> None:
        try:
            switch(caddy_machine, caddy_site, release(label))
            outcomes.append("switched")
        except SwitchFailed as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=run, args=(f"r{n}",)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [
        "another deploy of shop.test is switching now; wait for it to end",
        "switched",
    ]


def test_a_switch_cut_short_after_the_move_warns_and_the_next_one_finishes(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    first = switch(caddy_machine, caddy_site, release("r1"))

    def stop_caddy(step: Step) -> None:
        if step.name == "switch" and step.ended:
            caddy_machine.supervisor.stop(caddy.PROGRAM)

    # The new release took the traffic: what failed after that is a warning, not a failure.
    cut = switch(caddy_machine, caddy_site, release("r2"), stop_caddy)
    assert cut.warning.startswith(
        f"r2 serves shop.test, but r1 on port {first.port} could not be stopped "
        "(Caddy does not answer"
    )
    assert cut.warning.endswith(
        "it gets no new requests but may still run. The next deploy or rollback of the "
        "service stops it"
    )
    assert [(s.name, s.ok) for s in cut.steps][-2:] == [("switch", True), ("drain", False)]
    # The next deploy starts Caddy again and leaves one release running.
    record = switch(caddy_machine, caddy_site, release("r3"))
    assert record.port == first.port
    assert fetch(listen_port(caddy_machine), caddy_site.domain) == (200, "r3")
    running = {s.name for s in caddy_machine.supervisor.all() if s.running}
    assert running == {caddy.PROGRAM, program_name(first.port)}


def test_this_machine_keeps_caddy_and_supervisord_in_the_data_dir(
    settings: Any, tmp_path: Path
) -> None:
    from onwatch.deploys.switch import this_machine

    settings.DATA_DIR = tmp_path
    settings.CADDY_HTTPS = False
    settings.CADDY_HTTP_PORT = 8080
    settings.CADDY_HEALTH_PORT = 3020
    machine = this_machine()
    assert machine.caddy.socket == tmp_path / "deploys" / "caddy" / "admin.sock"
    assert isinstance(machine.supervisor, procman.Supervisor)
    assert machine.supervisor.socket == tmp_path / "deploys" / "supervisor" / "supervisor.sock"
    config = machine.caddy.config()
    assert config["admin"]["listen"] == f"unix/{tmp_path}/deploys/caddy/admin.sock"
    assert config["apps"]["http"]["servers"]["slots"]["listen"] == ["127.0.0.1:3020"]
    machine.caddy.put_site(caddy.Site("shop.test", (20001, 20002)))
    sites = machine.caddy.config()["apps"]["http"]["servers"]["sites"]
    assert sites["listen"] == [":8080"] and sites["automatic_https"] == {"disable": True}


def test_what_is_left_behind_of_slots_is_their_site_their_label_or_their_program(
    caddy_machine: Machine, caddy_site: caddy.Site
) -> None:
    ports = set(caddy_site.ports)
    assert left_behind(caddy_machine, ports)  # the site alone
    assert not left_behind(caddy_machine, {caddy_site.ports[0] + 1000})
    switch(caddy_machine, caddy_site, release("r1"))
    caddy_machine.caddy.remove_site(caddy_site.domain)
    assert left_behind(caddy_machine, ports)  # its live slot and program
    stop_serving(caddy_machine, ports)
    assert not left_behind(caddy_machine, ports)
