"""A machine of its own for switch tests and the bench: onwatch's supervisord and Caddy in
a short temporary folder (unix socket paths are limited), on free loopback ports, and
everything they started stopped afterwards, also when the test fails."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

from onwatch.deploys import caddy, procman
from onwatch.deploys import switch as switching
from onwatch.deploys.switch import Gate, Machine, Release, Step, Switch
from tests.support.procs import free_port

APP = Path(__file__).with_name("switch_app.py")


# A test's switches wait less than onwatch's own where no test is about how long: the
# gate asks every 0.1 s (not 0.5 s) for its 3 answers in a row, and Caddy checks slots every
# 0.2 s (not 0.5 s), which the settling time follows as onwatch's does (twice the interval
# and the same margin): tests.support.releases.quick_switches. ~3 s less sleep a switch.
QUICK_GATE = Gate(interval=0.1)
QUICK_HEALTH_INTERVAL = 0.2


def switch(
    machine: Machine,
    site: caddy.Site,
    release: Release,
    on_step: Callable[[Step], None] = lambda step: None,
    gate: Gate = QUICK_GATE,
    keep_counting: bool = False,
) -> Switch:
    """onwatch's switch, its gate the tests' quicker one unless told."""
    return switching.switch(machine, site, release, on_step, gate, keep_counting)


def below_ephemeral_port() -> int:
    """A free port below the range the kernel hands out for bind(0) (32768 and up here):
    Caddy binds the machine's ports only once it starts, and until then a service's slot
    ports, chosen by bind(0) as onwatch does (services._slot_ports), could be the same."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@contextmanager
def own_machine(https: bool = False) -> Iterator[Machine]:
    root = Path(tempfile.mkdtemp(prefix="ow-sw-"))
    ports: list[int] = []
    while len(ports) < 3:
        if (port := below_ephemeral_port()) not in ports:
            ports.append(port)
    options = caddy.Options(
        https=https, http_port=ports[0], https_port=ports[1], health_port=ports[2], bind="127.0.0.1"
    )
    machine = Machine(root, options)
    try:
        yield machine
    finally:
        stop_everything(machine)
        shutil.rmtree(root, ignore_errors=True)


def stop_everything(machine: Machine) -> None:
    """supervisord (or the systemd units) and every process it runs; whatever is left is
    killed."""
    supervisor = machine.supervisor
    if not supervisor.answers():
        return
    pids = [s.pid for s in supervisor.all() if s.pid]
    if isinstance(supervisor, procman.Supervisor):
        _shut_down_at_once(supervisor, pids)
        return
    with suppress(Exception):
        supervisor.shutdown()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _shut_down_at_once(supervisor: procman.Supervisor, pids: list[int]) -> None:
    """supervisord killed first (it starts nothing again then), then each of its programs'
    whole process group (it gives each one its own): nothing of a test's needs a graceful
    end, which took 2-4 s a machine (Caddy's and the releases' stop, and supervisord's
    own ticks as it shuts down). The machine's init reaps them, as after a crash; they
    are dead on return (their ports closed), as after a graceful shutdown."""
    main = supervisor.pid()
    with suppress(ProcessLookupError):
        os.kill(main, signal.SIGKILL)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(map(_alive, [main, *pids])) and time.monotonic() < deadline:
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Running still: a zombie has let go of its ports and files already (and init may
    reap it only a second later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def site(machine: Machine, domain: str = "shop.test") -> caddy.Site:
    return caddy.Site(domain, (free_port(), free_port()), "/health")


def release(label: str, **env: str) -> Release:
    """The app run by the machine's python3 (stdlib only) from a folder of its own: as root,
    web processes run as the step user, who cannot reach the tests' Python and checkout
    (under /root on most runners), as a real release's are built where that user can."""
    return Release(
        label,
        f"exec python3 {APP.name}",
        app_folder(),
        {"RELEASE": label, **env},
        stop_seconds=10,
    )


@cache
def app_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ow-app-"))
    folder.chmod(0o755)
    shutil.copy(APP, folder / APP.name)
    (folder / APP.name).chmod(0o644)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def listen_port(machine: Machine) -> int:
    return machine.options.port


def caddy_tcp_ports(machine: Machine) -> set[int]:
    """The TCP ports Caddy listens on (ss)."""
    [pid] = [s.pid for s in machine.supervisor.all() if s.name == caddy.PROGRAM]
    said = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True)
    mine = [line.split() for line in said.stdout.splitlines() if f"pid={pid}," in line]
    return {int(fields[3].rsplit(":", 1)[1]) for fields in mine}
