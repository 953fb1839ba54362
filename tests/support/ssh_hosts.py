"""SSH hosts on this one machine for the remote deploy tests: each a real sshd on loopback
(signing in as the user running the tests) whose sessions get a folder of their own as the
host's onwatch folder (ONWATCH_HOST_DIR, as another machine's HOME would be), and a Caddy
on free ports of its own; everything they started is stopped afterwards.

A host is prepared as hostprepare.sh does it (a venv of the host's own Python 3) but, to
save the minutes pip would take, its supervisord and caddy are links to this venv's."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from onwatch.core import ssh
from onwatch.deploys import caddy, hosts
from onwatch.deploys.remote import RemotePlace
from onwatch.deploys.switch import Machine, Release
from onwatch.deploys.systemd import CHOICE
from tests.support.remote_servers import SshServer
from tests.support.switching import APP, below_ephemeral_port, stop_everything

# The host's Python, not this venv's: the agent runs there with what the host has.
HOST_PYTHON = "/usr/bin/python3"
# Machine-wide, as the crontab it guards (tests.support.ssh_hosts.forget_boot_line).
CRONTAB_LOCK = Path(tempfile.gettempdir()) / "onwatch-tests-crontab.lock"
# hostprepare.sh's line for a folder made by ssh_host.
BOOT_LINE = re.compile(
    r'@reboot /bin/sh "(' + re.escape(tempfile.gettempdir()) + r'/ow-h-[^/"]+)/o/boot\.sh" .*'
)


@dataclass
class SshHost:
    sshd: SshServer
    dir: Path
    options: caddy.Options
    key: ssh.KeyPair

    @property
    def name(self) -> str:
        return f"{self.sshd.user}@127.0.0.1:{self.sshd.port}"

    @property
    def machine(self) -> Machine:
        """The host's supervisord and Caddy, as the agent keeps them (tests look in)."""
        return Machine(self.dir / "machine", self.options)

    def target(self, known_hosts: str | None = None) -> hosts.Target:
        where = ssh.endpoint("127.0.0.1", self.sshd.port, self.sshd.user)
        if known_hosts is None:
            known_hosts = ssh.scan_host_keys("127.0.0.1", self.sshd.port)
        return hosts.Target(self.name, where, self.key.private, known_hosts)

    def place(self) -> RemotePlace:
        return RemotePlace(self.target(), self.options)


def prepare(folder: Path) -> None:
    venv = folder / "venv"
    subprocess.run([HOST_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    for tool in ("supervisord", "supervisorctl", "caddy"):
        (venv / "bin" / tool).symlink_to(Path(sys.executable).with_name(tool))


def caddy_options() -> caddy.Options:
    ports: list[int] = []
    while len(ports) < 3:
        if (port := below_ephemeral_port()) not in ports:
            ports.append(port)
    return caddy.Options(False, ports[0], ports[1], ports[2], bind="127.0.0.1")


@contextmanager
def ssh_host(**env: str) -> Iterator[SshHost]:
    """`env`: more of the sessions' environment (e.g. a HOME holding a .bashrc). The host
    keeps its apps in supervisord unless `env` names another manager (as the tests' own
    environment does: tests.support.env)."""
    root = Path(tempfile.mkdtemp(prefix="ow-h-"))  # short: unix socket paths are limited
    folder = root / "o"
    session = {"ONWATCH_HOST_DIR": str(folder), CHOICE: "supervisord", **env}
    sshd = SshServer(root / "sshd", env=session)
    host = SshHost(sshd, folder, caddy_options(), ssh.new_key_pair("tests"))
    sshd.authorize(host.key.public)
    try:
        sshd.start()
        prepare(folder)
        yield host
    finally:
        stop_everything(host.machine)
        forget_boot_line(folder)
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)


def app_tree(folder: Path) -> Path:
    """A checked-out tree of the small app (its .git too, which never travels)."""
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    shutil.copy(APP, folder / APP.name)
    return folder


def release_in(folder: str, label: str, **env: str) -> Release:
    return Release(
        label, f"exec python3 {APP.name}", Path(folder), {"RELEASE": label, **env}, stop_seconds=10
    )


def crontab() -> list[str]:
    """The crontab of the user running the tests (every test host signs in as it)."""
    said = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return said.stdout.splitlines() if said.returncode == 0 else []


def forget_boot_line(folder: Path) -> None:
    """The @reboot line hostprepare.sh added for a test host's folder, gone with it, and
    those of test hosts whose folders are gone (a session killed before it could forget
    them): the crontab is the real one of the user running the tests, one for every
    session and worker on the machine, so it is rewritten under a lock of theirs."""
    with CRONTAB_LOCK.open("a") as lock:
        # Released with the file, or by the kernel if this process is killed; a kill before
        # the write leaves the crontab as it was (crontab - replaces it whole).
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = crontab()
        kept = [line for line in lines if str(folder) not in line and not _stale(line)]
        if kept != lines:
            text = "".join(f"{line}\n" for line in kept)
            subprocess.run(["crontab", "-"], input=text, text=True, check=True)


def _stale(line: str) -> bool:
    """A test host's boot line whose folder is gone (only ours: ssh_host's prefix)."""
    match = BOOT_LINE.fullmatch(line)
    return match is not None and not Path(match[1]).exists()
