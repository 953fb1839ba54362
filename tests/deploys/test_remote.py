"""RemotePlace against a real sshd on loopback, signing in as the user running
the tests, on a host prepared for real (tests/support/ssh_hosts.py): the agent uploaded
once, a tree received and built there, releases switched live through that host's own Caddy
with zero failed requests, and a connection lost mid-switch said in one line while the host
serves."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onwatch.core import ssh
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import agent, caddy, hostchecks, hosts, remote, services
from onwatch.deploys.models import Host
from onwatch.deploys.places import PlaceError, Ran
from onwatch.deploys.remote import RemotePlace
from onwatch.deploys.services import HostFields
from onwatch.deploys.switch import Step, SwitchFailed, program_name
from tests.support.load import Load, fetch
from tests.support.ssh_hosts import (
    HOST_PYTHON,
    SshHost,
    app_tree,
    crontab,
    release_in,
    ssh_host,
)
from tests.support.switching import QUICK_GATE, stop_everything

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    with ssh_host() as made:
        yield made


@pytest.fixture
def place(host: SshHost) -> Iterator[RemotePlace]:
    made = host.place()
    try:
        yield made
    finally:
        made.close()


def site_on(place: RemotePlace, domain: str) -> caddy.Site:
    first, second = place.free_ports(2)
    site = caddy.Site(domain, (first, second), "/health")
    place.ensure_ready()
    assert place.put_site(site) is True
    return site


def app_release(place: RemotePlace, tmp_path: Path, number: int) -> str:
    folder = place.release_folder(1, number)
    place.receive(folder, app_tree(tmp_path / f"tree-{number}"))
    return folder


def test_the_agent_runs_on_the_hosts_python_without_django(tmp_path: Path) -> None:
    """What switch.py, caddy.py and procman.py import at their top must be in the agent:
    the host has no Django (nor onwatch)."""
    digest, data = remote.agent_archive()
    assert remote.agent_archive()[0] == digest  # the same code, the same agent
    (tmp_path / "agent.pyz").write_bytes(data)
    done = subprocess.run(
        [HOST_PYTHON, "-I", str(tmp_path / "agent.pyz")], capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (2, "usage: agent.pyz serve DIR\n")


def test_the_agent_is_uploaded_once_and_reused(host: SshHost) -> None:
    for old in host.dir.glob("agent-*.pyz"):
        old.unlink()
    (host.dir / "agent-0ld0ld0ld0ld0ld0.pyz").write_bytes(b"an older onwatch's")
    digest, _ = remote.agent_archive()
    first = host.place()
    try:
        ports = first.free_ports(3)
    finally:
        first.close()
    assert first.uploaded and len(set(ports)) == 3
    uploaded = host.dir / f"agent-{digest}.pyz"
    made = uploaded.stat().st_mtime_ns
    again = host.place()
    try:
        assert again.release_folder(4, 9) == f"{host.dir}/releases/4/9"
    finally:
        again.close()
    assert not again.uploaded and uploaded.stat().st_mtime_ns == made
    assert [p.name for p in host.dir.glob("agent-*.pyz")] == [uploaded.name]
    assert uploaded.stat().st_mode & 0o077 == 0  # the deploy user's only


def test_two_deploys_uploading_the_agent_at_once_both_leave_it_whole(host: SshHost) -> None:
    digest, data = remote.agent_archive()
    places = [host.place(), host.place()]
    try:
        for place in places:
            place.session = ssh.Session(place.target.private_key, place.target.known_hosts)
        uploads = [threading.Thread(target=place._upload) for place in places]
        for upload in uploads:
            upload.start()
        for upload in uploads:
            upload.join()
    finally:
        for place in places:
            place.close()
    assert all(place.uploaded for place in places)
    assert (host.dir / f"agent-{digest}.pyz").read_bytes() == data
    assert list(host.dir.glob(".agent*")) == []


def test_a_tree_is_received_fresh_and_built_there(place: RemotePlace, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / ".git").mkdir(parents=True)
    (tree / "greeting").write_text("hello from the tree\n")
    (tree / "old").write_text("")
    folder = place.release_folder(2, 1)
    place.receive(folder, tree)
    assert place.has_folder(folder)
    lines: list[str] = []
    command = 'cat greeting; ls -a; echo "$WHO"; echo to stderr >&2; exit 3'
    ran = place.run(folder, command, {"WHO": "the builder"}, 30, lines.append, threading.Event())
    assert ran.exit_code == 3 and ran.reason is None
    assert lines == [
        "hello from the tree",
        ".",
        "..",
        "greeting",
        "old",
        "the builder",
        "to stderr",
    ]
    assert ran.last_lines == lines[-3:]
    # Received again: what was there is gone.
    (tree / "old").unlink()
    place.receive(folder, tree)
    listed: list[str] = []
    place.run(folder, "ls", {}, 30, listed.append, threading.Event())
    assert listed == ["greeting"]
    place.remove_folders([folder])
    assert not place.has_folder(folder)


def test_links_that_leave_the_release_are_refused(place: RemotePlace, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "conf").mkdir(parents=True)
    (tree / "conf" / "app.ini").write_text("[app]\n")
    (tree / "app.ini").symlink_to("conf/app.ini")
    folder = place.release_folder(2, 3)
    place.receive(folder, tree)
    said: list[str] = []
    place.run(folder, "cat app.ini", {}, 30, said.append, threading.Event())
    assert said == ["[app]"]
    (tree / "conf" / "keys").symlink_to("../../../../../../etc/ssh")
    with pytest.raises(PlaceError) as refused:
        place.receive(folder, tree)
    assert str(refused.value) == (
        f"{place.name}: the release holds conf/keys, which onwatch does not copy (it is not "
        "a plain file, folder or link inside the release): remove it from the repository, "
        "then deploy again"
    )
    assert place.has_folder(folder)  # what was received before stays, whole


def test_a_build_is_stopped_at_its_time_limit_or_when_cancelled(
    place: RemotePlace, tmp_path: Path
) -> None:
    (tmp_path / "tree").mkdir()
    folder = place.release_folder(2, 2)
    place.receive(folder, tmp_path / "tree")
    lines: list[str] = []
    started = time.monotonic()
    ran = place.run(folder, "echo started; sleep 30", {}, 1, lines.append, threading.Event())
    assert (ran.exit_code, ran.reason, lines) == (None, "timed out after 1 s", ["started"])
    assert time.monotonic() - started < 10
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    ran = place.run(folder, "sleep 30", {}, 60, lines.append, cancelled)
    assert (ran.exit_code, ran.reason) == (None, "cancelled") and ran.seconds < 10
    # The place still answers: the connection outlives a stopped build.
    assert place.has_folder(folder)


def test_a_full_disk_on_the_host_is_said_so(place: RemotePlace, tmp_path: Path) -> None:
    """The host's releases of one service on a filesystem of 512 KB (a tmpfs: the tests
    run as root, as in CI)."""
    folder = place.release_folder(9, 1)
    full = Path(folder).parent
    full.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(full)], check=True)
    try:
        (tmp_path / "tree").mkdir()
        (tmp_path / "tree" / "big").write_bytes(b"x" * 1024 * 1024)
        with pytest.raises(PlaceError) as full_up:
            place.receive(folder, tmp_path / "tree")
        assert str(full_up.value) == (
            f"{place.name}: the host ran out of disk space while the release's files were "
            f"copied to {folder}: free some space there, then deploy again"
        )
        assert not place.has_folder(folder) and list(full.iterdir()) == []
        (tmp_path / "tree" / "big").unlink()
        place.receive(folder, tmp_path / "tree")  # the connection goes on
        command = "head -c 1048576 /dev/zero > big"
        ran = place.run(folder, command, {}, 30, lambda line: None, threading.Event())
        assert ran.exit_code == 1 and ran.reason == "the host ran out of disk space", ran
        # Said in another language (the service's env may choose one): the disk tells.
        quiet = "head -c 1048576 /dev/zero > big 2>/dev/null || { echo Kein Speicher; exit 1; }"
        ran = place.run(folder, quiet, {}, 30, lambda line: None, threading.Event())
        assert ran.exit_code == 1 and ran.reason == "the host ran out of disk space", ran
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_folders_outside_the_releases_are_refused(place: RemotePlace) -> None:
    with pytest.raises(PlaceError) as refused:
        place.remove_folders(["/etc"])
    assert str(refused.value) == f"{place.name}: /etc is not a release folder of {place.dir}"


def test_a_release_is_switched_live_with_no_failed_request_and_the_next_drains_it(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "shop.test")
    first = place.switch(site, release_in(app_release(place, tmp_path, 1), "r1"), print, QUICK_GATE)
    assert place.serving(site) == "r1" and first.previous is None
    steps: list[Step] = []
    load = Load(host.options.http_port, site.domain, slow_seconds=1.5).start()
    try:
        second = place.switch(
            site, release_in(app_release(place, tmp_path, 2), "r2"), steps.append, QUICK_GATE
        )
    finally:
        tally = load.stop()
    assert tally.failed == 0, tally.errors
    assert tally.ok > 20 and {"r1", "r2"} <= set(tally.answers)
    assert [s.name for s in second.steps] == ["start", "health gate", "switch", "drain"]
    assert all(s.ok and s.ended for s in second.steps), second.steps
    # Each step was heard as it began (the gate again as it says what it waits for) and
    # as it ended, in order.
    heard = [s.name for s in steps]
    assert [n for n, _ in itertools.groupby(heard)] == [s.name for s in second.steps]
    assert all(heard.count(s.name) >= 2 for s in second.steps), heard
    assert second.previous == "r1" and second.felt is not None
    assert second.felt.failed == 0 and second.felt.served > 0, second.felt
    assert place.serving(site) == "r2"
    assert fetch(host.options.http_port, site.domain)[1] == "r2"
    running = {s.name for s in host.machine.supervisor.all()}
    assert running == {caddy.PROGRAM, program_name(second.port)}


def test_a_service_stops_serving_on_the_host(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "gone.test")
    assert place.put_site(site) is False  # unchanged: no reload
    record = place.switch(
        site, release_in(app_release(place, tmp_path, 7), "r1"), print, QUICK_GATE
    )
    place.stop_serving(set(site.ports))
    assert place.serving(site) is None
    assert site.domain not in {s.domain for s in host.machine.caddy.sites()}
    assert host.machine.supervisor.status(program_name(record.port)) is None


def test_the_hosts_caddy_counts_a_sites_answers_for_the_watch(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "counted.test")
    record = place.switch(
        site, release_in(app_release(place, tmp_path, 6), "r1"), print, QUICK_GATE
    )
    assert not place.counting(site.domain)
    place.start_counting(site.domain)
    assert place.counting(site.domain)
    for path in ("/", "/", "/missing"):
        assert fetch(host.options.http_port, site.domain, path)[0] == 200
    sums: list[agent.Sum] = []
    offset, deadline = 0, time.monotonic() + 10
    while sum(s.requests for s in sums) < 3 and time.monotonic() < deadline:
        asked = time.time()
        found = place.counted_from(site.domain, offset)
        sums, offset = sums + found.sums, found.offset
        # The agent says its own now with each read: the watch times answers by it.
        assert found.clock is not None and asked <= found.clock <= time.time()
        time.sleep(0.1)
    # Summed on the host, by the second and slot: the three answers, all of the slot's.
    assert sum(s.requests for s in sums) == 3
    assert {(s.upstream, s.made) for s in sums} == {(f"127.0.0.1:{record.port}", False)}
    assert sum(s.classes.get("2xx", 0) for s in sums) == 3 and not any(s.errors for s in sums)
    again = place.counted_from(site.domain, offset)
    assert (again.sums, again.offset) == ([], offset)  # each line read once
    # The host said its now as the connection began: this loopback host shares our clock.
    assert abs(place.skew) < 1, place.skew
    place.stop_counting(site.domain)
    assert not place.counting(site.domain)
    assert place.counted_from(site.domain, 0).sums == []


def test_a_hosts_switch_steps_are_timed_by_onwatchs_clock() -> None:
    """A host 90 s ahead says its release went live at 12:01:30 when onwatch's clock
    said 12:00:00: the deploy's steps, and when it went live on every host, are of one
    clock."""
    at = datetime(2026, 12, 7, 12, 1, 30, tzinfo=UTC)
    step = Step("switch", at, at + timedelta(seconds=2), live_at=at + timedelta(seconds=1))
    ours = remote.on_our_clock(step, 90.0)
    assert (ours.started, ours.ended, ours.live_at) == (
        datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 12, 0, 2, tzinfo=UTC),
        datetime(2026, 12, 7, 12, 0, 1, tzinfo=UTC),
    )
    assert remote.on_our_clock(step, 0.0) is step


def test_the_answers_of_an_agent_older_than_the_sums_are_summed_here() -> None:
    """A host not prepared again since may run the agent before the sums: its lines are
    read as they were sent, and summed here, in the same shape."""
    lines = [
        caddy.Answer(100.2, 200, "127.0.0.1:4001", 200, 0.01),
        caddy.Answer(100.7, 503, "127.0.0.1:4001", 503, 0.03),
        caddy.Answer(101.1, 502, "", None, 0.5),
    ]
    old = {"answers": [dataclasses.asdict(a) for a in lines], "offset": 300}
    assert (
        remote.sums_of(old)
        == agent.summed(lines)
        == [
            agent.Sum(100.0, "127.0.0.1:4001", False, 2, {"2xx": 1, "5xx": 1}, 0.04),
            agent.Sum(101.0, "", True, 1, {"5xx": 1}, 0.5),
        ]
    )
    assert remote.before_of({"event": "before_count", "answers": None}) is None
    assert remote.before_of({"event": "before_count", "sums": []}) == []


def test_a_health_gate_that_never_passes_leaves_the_old_release_serving(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "gate.test")
    folder = app_release(place, tmp_path, 3)
    place.switch(site, release_in(folder, "good"), print, QUICK_GATE)
    with pytest.raises(SwitchFailed) as failed:
        place.switch(
            site, release_in(folder, "broken", HEALTH="fail"), print, replace(QUICK_GATE, seconds=2)
        )
    assert str(failed.value) == (
        "broken never answered 200 3 times in a row on /health within 2 s (last: HTTP 500 "
        "'health'); it was stopped; good still serves gate.test"
    )
    assert failed.value.record.steps[-1].name == "health gate"
    assert place.serving(site) == "good"
    assert fetch(host.options.http_port, site.domain) == (200, "good")


def test_a_connection_lost_mid_switch_is_one_line_and_the_host_serves_on(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "lost.test")
    folder = app_release(place, tmp_path, 4)
    place.switch(site, release_in(folder, "kept"), print, QUICK_GATE)
    link = place.link
    assert link is not None

    def cut(step: Step) -> None:
        if step.name == "health gate" and step.ended is None:
            link.proc.kill()  # as a network gone: onwatch's end of ssh is no more

    load = Load(host.options.http_port, site.domain).start()
    try:
        with pytest.raises(PlaceError) as lost:
            place.switch(site, release_in(folder, "cut"), cut, QUICK_GATE)
        assert str(lost.value) == (
            f"{host.name} went away during the switch (the connection ended); traffic had "
            "not moved to cut: what served lost.test there serves on, and the host stops "
            "cut; deploy again once the host answers"
        )
        # The agent stops the new release once it finds nobody to switch for.
        new_slot = program_name(site.ports[1])
        deadline = time.monotonic() + 20
        while host.machine.supervisor.status(new_slot) is not None:
            assert time.monotonic() < deadline, "the cut switch's release still runs"
            time.sleep(0.2)
    finally:
        tally = load.stop()
    assert tally.failed == 0 and set(tally.answers) == {"kept"}, tally.errors
    again = host.place()
    try:
        assert again.serving(site) == "kept"
    finally:
        again.close()


def test_a_switch_that_moved_traffic_before_the_connection_was_lost_finishes(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "moved.test")
    folder = app_release(place, tmp_path, 5)
    first = place.switch(site, release_in(folder, "old"), print, QUICK_GATE)
    link = place.link
    assert link is not None

    def cut(step: Step) -> None:
        if step.name == "drain" and step.ended is None:
            link.proc.kill()

    with pytest.raises(PlaceError) as lost:
        place.switch(site, release_in(folder, "new"), cut, QUICK_GATE)
    assert str(lost.value) == (
        f"{host.name} went away during the switch (the connection ended); new took "
        "moved.test's traffic before that and serves it there; the host finishes the switch "
        "on its own"
    )
    # The old release is drained and stopped there all the same.
    deadline = time.monotonic() + 20
    while host.machine.supervisor.status(program_name(first.port)) is not None:
        assert time.monotonic() < deadline, "the old release still runs"
        time.sleep(0.2)
    assert fetch(host.options.http_port, site.domain) == (200, "new")
    again = host.place()
    try:
        assert again.serving(site) == "new"
    finally:
        again.close()


def test_a_switch_whose_continue_comes_late_is_stopped_and_answered(tmp_path: Path) -> None:
    """The agent waits ONWATCH_AGENT_WAIT_SECONDS for onwatch's word before traffic moves
    (5 minutes, unless the host's environment says otherwise)."""
    with ssh_host(ONWATCH_AGENT_WAIT_SECONDS="2") as slow:
        place = slow.place()
        try:
            site = site_on(place, "late.test")
            folder = app_release(place, tmp_path, 1)
            place.switch(site, release_in(folder, "r1"), print, QUICK_GATE)
            started = time.monotonic()
            with pytest.raises(PlaceError) as late:
                place.switch(
                    site,
                    release_in(folder, "r2"),
                    print,
                    QUICK_GATE,
                    before_count=lambda: time.sleep(4),
                )
            assert time.monotonic() - started < 30
            assert str(late.value) == (
                f"{slow.name}: the switch of late.test to r2 stopped before traffic moved: "
                "onwatch did not answer within 2 s; r1 still serves it"
            )
            assert place.serving(site) == "r1"  # the same connection goes on
            assert slow.machine.supervisor.status(program_name(site.ports[1])) is None
        finally:
            place.close()


def test_onwatch_failing_mid_switch_stops_the_switch_on_the_host_and_says_so(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "callback.test")
    folder = app_release(place, tmp_path, 8)
    place.switch(site, release_in(folder, "r1"), print, QUICK_GATE)

    def failing(step: Step) -> None:
        if step.name == "health gate" and step.ended is None:
            raise RuntimeError("the database is locked")

    with pytest.raises(PlaceError) as failed:
        place.switch(site, release_in(folder, "r2"), failing, QUICK_GATE)
    assert str(failed.value) == (
        f"{place.name}: onwatch failed during the switch (RuntimeError: the database is "
        "locked); the host stopped: the switch of callback.test to r2 stopped before traffic "
        "moved: onwatch asked it to stop; r1 still serves it"
    )
    assert place.serving(site) == "r1"
    # Asking the host something while it switches is refused at once, not waited for.
    with pytest.raises(PlaceError) as asked:
        place.switch(
            site,
            release_in(folder, "r3"),
            print,
            QUICK_GATE,
            before_count=lambda: print(place.counted_from(site.domain, 0)),
        )
    assert "(PlaceError: " in str(asked.value) and "one request at a time" in str(asked.value)
    assert str(asked.value).endswith("onwatch asked it to stop; r1 still serves it")
    assert fetch(host.options.http_port, site.domain) == (200, "r1")


def test_why_a_connection_ended_is_of_that_connection(place: RemotePlace) -> None:
    place.free_ports(1)
    assert place.session is not None and place.link is not None
    (place.session.dir / "agent.log").write_text("Traceback: what an earlier agent said\n")
    place.link.proc.kill()
    with pytest.raises(PlaceError):
        place.free_ports(1)
    place.free_ports(1)  # a new connection
    place.link.proc.kill()
    with pytest.raises(PlaceError) as lost:
        place.free_ports(1)
    assert str(lost.value) == (
        f"{place.name} went away during the choice of ports (the connection ended); what "
        "runs there runs on without onwatch: deploy again once the host answers"
    )


def test_two_deploys_on_one_host_at_once_each_switch_their_own_site(
    host: SshHost, tmp_path: Path
) -> None:
    """Two connections, two agents, one supervisord and one Caddy there."""
    places = [host.place(), host.place()]
    done: dict[str, str] = {}

    def deploy(place: RemotePlace, domain: str, number: int) -> None:
        site = site_on(place, domain)
        folder = app_release(place, tmp_path / domain, number)
        done[domain] = place.switch(site, release_in(folder, domain), print, QUICK_GATE).release

    try:
        deploys = [
            threading.Thread(target=deploy, args=(place, f"both{n}.test", 20 + n))
            for n, place in enumerate(places)
        ]
        for one in deploys:
            one.start()
        for one in deploys:
            one.join(120)
    finally:
        for place in places:
            place.close()
    assert done == {"both0.test": "both0.test", "both1.test": "both1.test"}
    for domain in done:
        assert fetch(host.options.http_port, domain) == (200, domain)
    assert {"both0.test", "both1.test"} <= {s.domain for s in host.machine.caddy.sites()}


def test_caddy_killed_mid_switch_on_a_host_ends_in_a_switch_that_says_what_serves(
    host: SshHost, place: RemotePlace, tmp_path: Path
) -> None:
    site = site_on(place, "killed.test")
    folder = app_release(place, tmp_path, 9)
    place.switch(site, release_in(folder, "r1"), print, QUICK_GATE)

    killed: list[int] = []

    def kill_caddy(step: Step) -> None:
        # Once: the gate's step is told again while it waits, and a second kill found the
        # first one's process gone (supervisord had not seen it die yet) on a slow machine.
        if step.name == "health gate" and step.ended is None and not killed:
            status = host.machine.supervisor.status(caddy.PROGRAM)
            assert status is not None and status.pid
            killed.append(status.pid)
            os.kill(status.pid, signal.SIGKILL)

    try:
        record = place.switch(site, release_in(folder, "r2"), kill_caddy, QUICK_GATE)
    except SwitchFailed as e:
        said, serving = str(e), "r1"
    else:
        said, serving = record.release, "r2"
    deadline = time.monotonic() + 20
    while place.serving(site) != serving:
        assert time.monotonic() < deadline, (said, place.serving(site))
        time.sleep(0.2)
    assert fetch(host.options.http_port, site.domain) == (200, serving), said


def test_a_host_that_falls_silent_is_given_up_on(
    host: SshHost, place: RemotePlace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running request says it is alive every few seconds; an agent that stops (a host
    frozen, a network that drops without a word) is given up on, not waited for."""
    monkeypatch.setattr(remote, "SILENCE_SECONDS", 2.0)
    (tmp_path / "tree").mkdir()
    folder = place.release_folder(2, 5)
    place.receive(folder, tmp_path / "tree")
    [frozen] = agents_serving(host.dir)
    os.kill(frozen, signal.SIGSTOP)
    started = time.monotonic()
    try:
        with pytest.raises(PlaceError) as silent:
            place.run(folder, "sleep 30", {}, 60, lambda line: None, threading.Event())
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert time.monotonic() - started < 15
    assert str(silent.value) == (
        f"{place.name} went away during the build (it said nothing for 2 s); what runs there "
        "runs on without onwatch: deploy again once the host answers"
    )


def agents_serving(folder: Path) -> list[int]:
    """The pids of the agents serving that host folder."""
    found = []
    for proc in Path("/proc").iterdir():
        with suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and str(folder).encode() in argv and proc.name.isdigit():
                found.append(int(proc.name))
    return found


def test_a_host_not_prepared_or_not_answering_is_said_so() -> None:
    with ssh_host() as bare:
        shutil.rmtree(bare.dir / "venv")
        place = bare.place()
        try:
            with pytest.raises(PlaceError) as unprepared:
                place.ensure_ready()
            bare.sshd.stop()
            with pytest.raises(PlaceError) as down:
                place.ensure_ready()
        finally:
            place.close()
    assert str(unprepared.value) == (
        f"{bare.name} is not prepared for deploys: run `onwatch hosts check {bare.name} "
        "--prepare`, then deploy again"
    )
    assert str(down.value) == (
        f"{bare.name} cannot be reached (connection refused): check the address, the port "
        "and that sshd runs there"
    )


def test_what_a_login_script_prints_is_not_taken_for_the_agent(tmp_path: Path) -> None:
    """bash runs ~/.bashrc before the command of an ssh session: a banner or a stray value
    there is not the agent's."""
    (tmp_path / ".bashrc").write_text('echo "Welcome to web1"; echo 42; echo \'["no"]\'\n')
    with ssh_host(HOME=str(tmp_path)) as noisy:
        place = noisy.place()
        try:
            assert len(place.free_ports(2)) == 2
            assert place.release_folder(1, 1) == f"{noisy.dir}/releases/1/1"
        finally:
            place.close()


def test_a_wrong_host_key_is_refused(host: SshHost) -> None:
    other = ssh.new_key_pair("someone else").public.split()
    forged = f"[127.0.0.1]:{host.sshd.port} {other[0]} {other[1]}\n"
    place = RemotePlace(host.target(known_hosts=forged), host.options)
    try:
        with pytest.raises(PlaceError) as refused:
            place.free_ports(1)
    finally:
        place.close()
    assert str(refused.value).startswith(
        f"{host.name} showed another host key than the one pinned, so onwatch did not sign in"
    )


@pytest.mark.django_db
def test_two_hosts_on_one_machine_each_serve_through_their_own_caddy(
    org: Organization, tmp_path: Path
) -> None:
    """Hosts added as people add them, with Caddy's ports of their own, checked for real,
    then a release switched live on each."""
    with ssh_host() as first, ssh_host() as second:
        added = [added_host(org, made) for made in (first, second)]
        for made, row in zip((first, second), added, strict=True):
            found = {f.what: (f.ok, f.line) for f in hostchecks.check(row, prepare=True)}
            assert found["ports"] == (True, f"Caddy may listen on port {made.options.http_port}")
            assert all(ok for ok, _ in found.values()), found
            place = remote.place_of(row)
            try:
                site = site_on(place, "both.test")
                folder = app_release(place, tmp_path / row.name, 1)
                place.switch(site, release_in(folder, f"on {made.sshd.port}"), print, QUICK_GATE)
            finally:
                place.close()
        for made in (first, second):
            answer = fetch(made.options.http_port, "both.test")
            assert answer == (200, f"on {made.sshd.port}")


@pytest.mark.django_db
def test_a_deploy_never_pins_a_forgotten_host_key_itself(org: Organization) -> None:
    with ssh_host() as made:
        row = added_host(org, made)
        services.forget_host_key(row, SYSTEM)
        with pytest.raises(PlaceError) as refused:
            remote.place_of(row)
        row.refresh_from_db()
    assert str(refused.value) == (
        f"{row.name}'s host key was forgotten: run `onwatch hosts check {row.name}` to pin "
        "it again, then deploy"
    )
    assert row.known_hosts == ""


def added_host(org: Organization, made: SshHost) -> Host:
    made.sshd.authorize(services.host_key(org).public_key)
    options = made.options
    fields = HostFields(
        address=made.name,
        allow_sudo=True,  # the tests sign in as whoever runs them: root in CI
        caddy_https=False,
        http_port=options.http_port,
        https_port=options.https_port,
        health_port=options.health_port,
    )
    return services.add_host(org, fields, SYSTEM)


def test_a_hosts_apps_come_back_after_a_reboot_without_onwatch(tmp_path: Path) -> None:
    """hostprepare.sh's @reboot line, added once however often the host is prepared, run
    as cron would run it after supervisord and all it ran were gone."""
    with ssh_host() as rebooted:
        place = rebooted.place()
        try:
            site = site_on(place, "boot.test")
            folder = app_release(place, tmp_path, 1)
            place.switch(site, release_in(folder, "r1"), print, QUICK_GATE)
        finally:
            place.close()
        target = rebooted.target()
        facts = hosts.parse(hosts.run_script(target, hosts.PROBE))
        assert facts["boot"] == ["no"]
        for _ in range(2):
            assert hosts.prepare(target, HOST_PYTHON, []) == []
        [line] = [line for line in crontab() if str(rebooted.dir) in line]
        facts = hosts.parse(hosts.run_script(target, hosts.PROBE))
        assert facts["boot"] == ["yes"]
        stop_everything(rebooted.machine)
        with pytest.raises(OSError):
            fetch(rebooted.options.http_port, site.domain)
        # cron runs the line with /bin/sh, in the user's home, with a bare environment
        command = line.removeprefix("@reboot ")
        booted = subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin"})
        assert booted.returncode == 0
        assert fetch(rebooted.options.http_port, site.domain) == (200, "r1")


def test_a_build_on_a_host_cannot_read_its_keys_nor_another_services_release(
    tmp_path: Path,
) -> None:
    """The deploy user's home (its ~/.ssh) and the agent's folder (onwatch's keys there,
    other services' releases) are hidden from a build, which sees the system read-only
    and writes its own folder. The home is outside /tmp and /var/tmp, whose own are the
    build's alone (the host's folder is in /tmp: another release there is hidden twice)."""
    home = Path(tempfile.mkdtemp(dir=Path.cwd(), prefix=".ow-home-"))
    try:
        (home / ".ssh").mkdir()
        (home / ".ssh" / "id_ed25519").write_text("the deploy user's key\n")
        with ssh_host(HOME=str(home)) as made:
            other = made.dir / "releases" / "7" / "1"
            other.mkdir(parents=True)
            (other / "config.py").write_text("SECRET = 'theirs'\n")
            place = made.place()
            try:
                ran, said = built(place, tmp_path, home, other)
            finally:
                place.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert ran.exit_code == 0 and ran.unsandboxed == "", (ran, said)
    assert said == ["own ok", "no key", "no release", "system read-only", "no bus", "python ok"]


def built(place: RemotePlace, tmp_path: Path, home: Path, other: Path) -> tuple[Ran, list[str]]:
    folder = place.release_folder(2, 1)
    place.receive(folder, app_tree(tmp_path / "tree"))
    command = (
        "echo built > built.txt && cat built.txt >/dev/null && echo own ok; "
        f"cat {home}/.ssh/id_ed25519 2>/dev/null || echo no key; "
        f"cat {other}/config.py 2>/dev/null || echo no release; "
        "touch /usr/onwatch-was-here 2>/dev/null || echo system read-only; "
        # The system's bus (and the user's, in /run/user) could start a program outside.
        "find /run/dbus /run/user -mindepth 1 2>/dev/null | grep -q . && echo bus seen "
        "|| echo no bus; "
        "python3 -c 'print(\"python ok\")'"
    )
    said: list[str] = []
    return place.run(folder, command, {}, 30, said.append, threading.Event()), said


def test_a_build_on_a_host_without_bubblewrap_runs_and_says_so(tmp_path: Path) -> None:
    with ssh_host(ONWATCH_AGENT_BWRAP="no-such-bwrap") as made:
        place = made.place()
        try:
            folder = place.release_folder(2, 1)
            place.receive(folder, app_tree(tmp_path / "tree"))
            said: list[str] = []
            ran = place.run(folder, "echo built", {}, 30, said.append, threading.Event())
        finally:
            place.close()
    assert (ran.exit_code, said) == (0, ["built"])
    assert ran.unsandboxed == "bubblewrap (bwrap) is not installed on the host"
