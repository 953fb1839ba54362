"""The zero-downtime switch of a site to a new release on one machine: start it on the free
slot beside the live one, gate it on its health path, move traffic, let the old release
finish its running requests, then stop it. Each step is recorded as it happens (on_step),
for a deploy's page.

Nothing here changes Caddy's configuration: slots are turned on and off (caddy.py says
why), so no client connection is closed by a switch. A release that never gets healthy is
stopped before any traffic could reach it, and nothing else changes."""

from __future__ import annotations

import fcntl
import http.client
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from onwatch.deploys import caddy, procman, systemd

GATE_PASSES = 3
GATE_SECONDS = 60.0
GATE_INTERVAL = 0.5
DRAIN_SECONDS = 30.0
# A stopped process's state in supervisord that will not become healthy by waiting.
GAVE_UP = ("FATAL", "EXITED", "STOPPED")


class SwitchFailed(Exception):
    """The switch did not happen; the message says what is live now and what to do."""

    def __init__(self, message: str, record: Switch) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class Release:
    """What runs a release: `command` is its web process (a shell line that listens on
    127.0.0.1:$PORT), run in `directory` with `env`; `label` names it to people."""

    label: str
    command: str
    directory: Path
    env: Mapping[str, str] = field(default_factory=dict)
    stop_seconds: int = 30
    # The user it runs as when onwatch runs as root: its service's own; empty, the step
    # user every service shares.
    user: str = ""


@dataclass
class Step:
    name: str
    started: datetime
    ended: datetime | None = None
    ok: bool = True
    detail: str = ""
    # The switch step's: when Caddy could first send the new release requests.
    live_at: datetime | None = None


@dataclass
class Felt:
    """What users felt during a switch, from Caddy's own request log: from the moment the
    new release could take traffic until the old one stopped. `unmeasured` says why the
    counts could not be read; then the numbers mean nothing and must not be shown."""

    served: int = 0
    # Answers Caddy made itself (no release answered: 502, 503, 504), not the app's.
    failed: int = 0
    # 5xx answers the app itself sent.
    app_errors: int = 0
    # Requests the old release took after Caddy should have stopped sending it any.
    mixed: int = 0
    # How long the old release took to finish its running requests; None: no old release.
    drain_seconds: float | None = None
    unmeasured: str = ""


@dataclass
class Switch:
    domain: str
    release: str
    port: int
    previous: str | None = None
    steps: list[Step] = field(default_factory=list)
    # Set when the switch happened but something after it did not (the old release could
    # not be stopped): the new release serves, and a person should hear what is left.
    warning: str = ""
    # Set once traffic could move (None: the switch stopped before that).
    felt: Felt | None = None
    # Caddy still logs the site's requests after the switch (keep_counting): for the watch
    # of the new release, which reads them on from the log's start and stops the count.
    still_counting: bool = False

    @property
    def seconds(self) -> float:
        ends = [s.ended for s in self.steps if s.ended]
        return (max(ends) - self.steps[0].started).total_seconds() if ends else 0.0


@dataclass(frozen=True)
class Gate:
    passes: int = GATE_PASSES
    seconds: float = GATE_SECONDS
    interval: float = GATE_INTERVAL


@dataclass(frozen=True)
class Machine:
    """onwatch's Caddy and process manager (supervisord, or systemd's user manager where it
    runs: systemd.manager) on a machine, kept under `root`. `as_user` is what a
    web process's command line is prefixed with to run as a release's user; None: as
    pipeline steps run on onwatch's own machine (sandbox.as_step_user). An SSH host's
    agent (agent.py) gives its own: there, the deploy user runs everything."""

    root: Path
    options: caddy.Options = field(default_factory=caddy.Options)
    as_user: Callable[[str], Sequence[str]] | None = None

    @property
    def caddy(self) -> caddy.Caddy:
        return caddy.Caddy(self.root / "caddy", self.options)

    @property
    def supervisor(self) -> procman.Manager:
        return systemd.manager(self.root)

    def ensure_running(self) -> None:
        self.caddy.ensure_running(self.supervisor)


def this_machine() -> Machine:
    # Imported here: the agent on an SSH host runs this module without Django.
    from django.conf import settings

    options = caddy.Options(
        settings.CADDY_HTTPS,
        settings.CADDY_HTTP_PORT,
        settings.CADDY_HTTPS_PORT,
        settings.CADDY_HEALTH_PORT,
    )
    return Machine(Path(settings.DATA_DIR) / "deploys", options)


def stop_serving(machine: Machine, ports: set[int]) -> None:
    """The slots on `ports` take no traffic, their programs are gone, and every site
    sent to them leaves Caddy (a reload, once per site): a service no longer runs here."""
    machine.ensure_running()
    for port in ports:
        machine.caddy.turn_off(port)
        machine.supervisor.remove(program_name(port))
    for site in machine.caddy.sites():
        if ports & set(site.ports):
            machine.caddy.remove_site(site.domain)


def left_behind(machine: Machine, ports: set[int]) -> bool:
    """Whether anything of the slots on `ports` is set up in Caddy or supervisord here:
    when nothing is, stop_serving has no reason to start them."""
    return any(ports & set(site.ports) for site in machine.caddy.sites()) or any(
        machine.caddy.live_label(p) is not None or machine.supervisor.has(program_name(p))
        for p in ports
    )


def program_name(port: int) -> str:
    """The supervisord program of a slot: ports belong to one site each (caddy.put_site)."""
    return f"slot-{port}"


def switch(
    machine: Machine,
    site: caddy.Site,
    release: Release,
    on_step: Callable[[Step], None] = lambda step: None,
    gate: Gate = Gate(),
    keep_counting: bool = False,
    before_count: Callable[[], None] = lambda: None,
) -> Switch:
    """Make `release` the live one of `site`; SwitchFailed when it cannot, with the old
    release still serving. With `keep_counting`, a switch that happened leaves Caddy
    logging the site's requests (record.still_counting says whether it does);
    `before_count` reads what Caddy logged until its own count starts (after the health
    gate, just before traffic moves)."""
    with _only_switch_of(machine, site):
        record = Switch(site.domain, release.label, site.ports[0])
        try:
            _switch(machine, site, release, record, on_step, gate, keep_counting, before_count)
        except (caddy.CaddyError, procman.ProcmanError) as e:
            record.previous = serving(machine, site)
            _fail(record, f"the switch to {release.label} did not finish: {e}", still=False)
        return record


def _switch(
    machine: Machine,
    site: caddy.Site,
    release: Release,
    record: Switch,
    on_step: Callable[[Step], None],
    gate: Gate,
    keep_counting: bool = False,
    before_count: Callable[[], None] = lambda: None,
) -> None:
    machine.ensure_running()
    live = [p for p in site.ports if machine.caddy.live_label(p) is not None]
    old = live[0] if live else None
    record.port = site.ports[1] if old == site.ports[0] else site.ports[0]
    record.previous = serving(machine, site)
    if len(live) > 1:
        # A switch was cut short: `first` load balancing means the first slot serves.
        _retire(machine, record, live[1], on_step, "tidy up")
    _start(machine, site, release, record, on_step)
    _gate(machine, site, release, record, on_step, gate)
    before_count()
    with _counting(machine, site, record, keep_counting) as window:
        _move(machine, release, record, on_step)
        if old is not None:
            _retire_old(machine, record, old, on_step, window)


def serving(machine: Machine, site: caddy.Site) -> str | None:
    """What serves the site now: the label of its live slot (the first, if both are)."""
    labels = [label for p in site.ports if (label := machine.caddy.live_label(p))]
    return labels[0] if labels else None


def _start(
    machine: Machine,
    site: caddy.Site,
    release: Release,
    record: Switch,
    on_step: Callable[[Step], None],
) -> None:
    port, name = record.port, program_name(record.port)
    with _step(record, "start", on_step) as step:
        machine.supervisor.remove(name)  # what an interrupted switch left in the free slot
        if _port_taken(port):
            _fail(
                record,
                f"port {port} of {site.domain} is taken by a program onwatch did not start; "
                f"stop it (ss -ltnp shows which) and deploy again",
            )
        try:
            program = _program(name, release, port, _wrapper(machine, release.user))
            machine.supervisor.add(program)
            machine.supervisor.start(name)
        except (procman.ProcmanError, ValueError) as e:
            machine.supervisor.remove(name)
            _fail(record, f"{release.label} did not start: {e}")
        step.detail = f"{release.label} runs on port {port}"


def _wrapper(machine: Machine, user: str) -> Sequence[str]:
    """ValueError when the release's user cannot be run as."""
    if machine.as_user is not None:
        return machine.as_user(user)
    # Imported here: sandbox needs Django, which the agent on an SSH host has not.
    from onwatch.deploys import sandbox

    try:
        return sandbox.as_step_user(user)
    except sandbox.SandboxError as e:
        raise ValueError(str(e)) from None


def _program(name: str, release: Release, port: int, wrapper: Sequence[str]) -> procman.Program:
    """The web process runs as its service's user, like the steps that built it: it reads
    its own release folder (that user's) and nothing of onwatch's (data directory, key
    file) nor of other services'. Its HOME is its folder: onwatch's own is out of reach."""
    home = {"HOME": str(release.directory)} if wrapper else {}
    return procman.Program(
        name,
        release.command,
        release.directory,
        {**home, **release.env, "PORT": str(port)},
        stop_seconds=release.stop_seconds,
        wrapper=wrapper,
    )


def _gate(
    machine: Machine,
    site: caddy.Site,
    release: Release,
    record: Switch,
    on_step: Callable[[Step], None],
    gate: Gate,
) -> None:
    with _step(record, "health gate", on_step) as step:
        # Said while it waits (up to a minute): the page showed a bare "running".
        step.detail = (
            f"waiting for {gate.passes} answers of 200 in a row on {site.health_path}, "
            f"at most {gate.seconds:g} s"
        )
        on_step(step)
        started = time.monotonic()
        passed, why = _wait_healthy(machine, record.port, site.health_path, gate)
        if not passed:
            machine.supervisor.remove(program_name(record.port))
            step.detail = ""  # the failure's own message takes its place
            _fail(
                record,
                f"{release.label} never answered 200 {gate.passes} times in a row on "
                f"{site.health_path} within {gate.seconds:g} s (last: {why}); it was stopped",
            )
        step.detail = f"{gate.passes} answers of 200 in {time.monotonic() - started:.1f} s"


def _wait_healthy(machine: Machine, port: int, path: str, gate: Gate) -> tuple[bool, str]:
    deadline, passes, why = time.monotonic() + gate.seconds, 0, "no answer yet"
    while time.monotonic() < deadline:
        status, why = _health(port, path)
        passes = passes + 1 if status == 200 else 0
        if passes >= gate.passes:
            return True, why
        state = machine.supervisor.status(program_name(port))
        if state is None or state.state in GAVE_UP:
            tail = machine.supervisor.log_tail(program_name(port), 2)
            return False, f"the process ended; it said: {tail}"
        time.sleep(gate.interval)
    return False, why


# Of a failing health answer, what the gate's failure quotes: its first line, this long.
HEALTH_SAID = 120


def _health(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        status, body = answer.status, answer.read(4096)
    except OSError as e:
        return 0, str(e.strerror or e)
    finally:
        connection.close()
    return status, f"HTTP {status}" + _first_line(body)


def _first_line(body: bytes) -> str:
    """What the app said with a failing answer ("database unreachable"): a person reading
    why the gate gave up learns more from it than from the status alone."""
    text = body.decode("utf-8", "replace").strip()
    line = text.splitlines()[0][:HEALTH_SAID] if text else ""
    return f" {line!r}" if line.isprintable() and line else ""


def _move(
    machine: Machine, release: Release, record: Switch, on_step: Callable[[Step], None]
) -> None:
    """The new slot on while the old one still serves: for a moment both do, never none."""
    with _step(record, "switch", on_step) as step:
        # Taken before: no request can reach the release earlier than this moment.
        at = datetime.now(UTC)
        machine.caddy.turn_on(record.port, release.label)
        step.live_at = at
        time.sleep(caddy.SETTLE_SECONDS)
        step.detail = f"{release.label} takes requests on port {record.port}"


def _retire_old(
    machine: Machine, record: Switch, port: int, on_step: Callable[[Step], None], window: Window
) -> None:
    """The new release serves already: the old one failing to stop does not undo that, so
    it is a warning saying what is left, not a failed switch."""
    try:
        window.drain_seconds = _retire(machine, record, port, on_step, "drain", window)
    except (caddy.CaddyError, procman.ProcmanError, OSError) as e:
        old = record.previous or "the old release"
        still = (
            "it may still take requests too"
            if machine.caddy.live_label(port) is not None
            else "it gets no new requests but may still run"
        )
        record.warning = (
            f"{record.release} serves {record.domain}, but {old} on port {port} could not be "
            f"stopped ({e}); {still}. The next deploy or rollback of the service stops it"
        )


def _retire(
    machine: Machine,
    record: Switch,
    port: int,
    on_step: Callable[[Step], None],
    name: str,
    window: Window | None = None,
) -> float:
    """Send `port` no new requests, let it finish those it is running, then stop it; the
    seconds that took. The `window` learns from when `port` should take no new request."""
    with _step(record, name, on_step) as step:
        started = time.monotonic()
        machine.caddy.turn_off(port)
        time.sleep(caddy.SETTLE_SECONDS)  # Caddy may still choose it until then
        if window is not None:
            window.old, window.old_off_at = f"127.0.0.1:{port}", time.time()
        running = machine.caddy.in_flight(port)
        while running and time.monotonic() - started < DRAIN_SECONDS + caddy.SETTLE_SECONDS:
            time.sleep(0.1)
            running = machine.caddy.in_flight(port)
        took = time.monotonic() - started
        machine.supervisor.remove(program_name(port))
        step.detail = (
            f"drained in {took:.1f} s"
            if not running
            else f"{running} requests still running after {DRAIN_SECONDS:g} s were cut off"
        )
        step.ok = not running
    return took


# How long what users felt waits for the lines of requests running as the switch ended,
# when the count goes on for the watch.
KEPT_WAIT = 0.5


@dataclass
class Window:
    """The switch as Caddy's counts need it: which slot was the old one (its upstream) and
    from when (Unix seconds) Caddy had surely stopped choosing it."""

    old: str = ""
    old_off_at: float = float("inf")
    drain_seconds: float | None = None
    # When the block ended (Unix seconds): with the count kept on for the watch, what
    # users felt of the switch is the answers to requests started by then.
    ended_at: float = float("inf")


@contextmanager
def _counting(
    machine: Machine, site: caddy.Site, record: Switch, keep: bool = False
) -> Iterator[Window]:
    """Caddy counts the site's requests while the block runs; record.felt says what it
    counted, or why nothing could be (the switch goes on either way). With `keep`, a block
    that ended well leaves the count running and the log as it is."""
    window, unmeasured, done = Window(), "", False
    caddy_before = _caddy_pid(machine)
    try:
        machine.caddy.start_counting(site.domain)
    except (caddy.CaddyError, OSError) as e:
        unmeasured = str(e)
    try:
        yield window
        done = True
    finally:
        window.ended_at = time.time()
        record.still_counting = keep and done and not unmeasured
        if not record.still_counting:
            with suppress(OSError):
                machine.caddy.stop_counting(site.domain)
        unmeasured = unmeasured or _restarted(caddy_before, _caddy_pid(machine))
        record.felt = _felt(machine, site, window, unmeasured, not record.still_counting)


def _restarted(before: int | None, after: int | None) -> str:
    """Why the count cannot be trusted, if Caddy may have restarted: requests refused while
    it was down never reached its log, so "0 failed" could lie. A pid of 0 is a Caddy that
    was not running (stopped, or still coming back up); None, supervisord not answering."""
    if before is None or after is None:
        # Not knowing is no "same".
        return "whether Caddy restarted during the switch is unknown"
    if not before and not after:
        return "Caddy was not running during the switch"
    return "Caddy was restarted during the switch" if after != before else ""


def _caddy_pid(machine: Machine) -> int | None:
    """Caddy's pid, 0 when it is not running, None when supervisord cannot tell."""
    try:
        status = machine.supervisor.status(caddy.PROGRAM)
    except procman.ProcmanError:
        return None
    return status.pid if status is not None and status.running else 0


def _felt(
    machine: Machine, site: caddy.Site, window: Window, unmeasured: str, forget: bool = True
) -> Felt:
    felt = Felt(drain_seconds=window.drain_seconds, unmeasured=unmeasured)
    if unmeasured:
        return felt
    try:
        # A count kept on never falls quiet on a busy site: the requests still running a
        # moment after the switch are the watch's to count.
        machine.caddy.wait_for_lines(site.domain, caddy.LOG_WAIT_SECONDS if forget else KEPT_WAIT)
        for answer in machine.caddy.counted(site.domain):
            if forget or answer.started <= window.ended_at:
                _tally(felt, answer, window)
        if forget:
            machine.caddy.forget_answers(site.domain)
    except (caddy.CaddyError, OSError) as e:
        return Felt(drain_seconds=window.drain_seconds, unmeasured=str(e))
    return felt


def _tally(felt: Felt, answer: caddy.Answer, window: Window) -> None:
    felt.served += 1
    if answer.app_status is None and answer.status >= 500:
        felt.failed += 1  # no release answered: Caddy made it (502, 503, 504)
    elif answer.app_status is not None and answer.app_status >= 500:
        felt.app_errors += 1
    # A request still running on the old slot when it went off is its to finish; one it
    # took afterwards went to the old version after the new one had taken over.
    old = answer.upstream == window.old and answer.app_status is not None
    if old and answer.started > window.old_off_at:
        felt.mixed += 1


def _fail(record: Switch, message: str, still: bool = True) -> NoReturn:
    if record.previous is None:
        raise SwitchFailed(f"{message}; nothing serves {record.domain} yet", record)
    now = f"{record.previous} still serves" if still else f"{record.previous} serves"
    raise SwitchFailed(f"{message}; {now} {record.domain}", record)


@contextmanager
def _step(record: Switch, name: str, on_step: Callable[[Step], None]) -> Iterator[Step]:
    step = Step(name, datetime.now(UTC))
    record.steps.append(step)
    on_step(step)
    try:
        yield step
    except BaseException as e:
        step.ok = False
        step.detail = step.detail or str(e)
        raise
    finally:
        step.ended = datetime.now(UTC)
        on_step(step)


@contextmanager
def _only_switch_of(machine: Machine, site: caddy.Site) -> Iterator[None]:
    """One switch of a site at a time, across onwatch's processes."""
    with site_lock(machine, site.domain) as ours:
        if not ours:
            record = Switch(site.domain, "", site.ports[0])
            raise SwitchFailed(
                f"another deploy of {site.domain} is switching now; wait for it to end",
                record,
            )
        yield


@contextmanager
def site_lock(machine: Machine, domain: str) -> Iterator[bool]:
    """The lock a switch of `domain` holds while it runs (flock, released when its process
    ends): True when taken here, False when a running switch holds it."""
    locks = machine.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
