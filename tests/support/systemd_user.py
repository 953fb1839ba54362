"""A real systemd user manager (`systemd --user`) for tests, where PID 1 is not systemd.

systemd refuses to run as a user manager unless the system was booted with it, which it
reads from /run/systemd/system: the manager runs in a mount namespace of its own where a
tmpfs over /run/systemd has that folder, so nothing else on the machine takes systemd as
running. It gets cgroups of its own (both hierarchies of a hybrid layout, as this machine
has), as logind would give user@UID.service; it needs root (the mount, the cgroups).
`systemctl --user` reaches it through the private socket in its XDG_RUNTIME_DIR, which the
tests set, with XDG_CONFIG_HOME (its unit folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from onwatch.deploys.systemd import CHOICE

SYSTEMD = "/lib/systemd/systemd"
CGROUP = Path("/sys/fs/cgroup")
START_SECONDS = 20
STOP_SECONDS = 30

BOOT = """
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system || exit 1
for group in "$@"; do echo $$ > "$group/cgroup.procs" || exit 1; done
exec env -i PATH=/usr/bin:/bin HOME="$HOME" XDG_RUNTIME_DIR="$XDG_RUNTIME_DIR" \
  XDG_CONFIG_HOME="$XDG_CONFIG_HOME" {systemd} --user
"""


class UserManager:
    """A user manager for the current user; `env` is the environment that reaches it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {
            "XDG_RUNTIME_DIR": str(folder / "run"),
            "XDG_CONFIG_HOME": str(folder / "config"),
        }
        self.groups = [base / f"onwatch-test-{folder.name}" for base in _cgroup_bases()]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for group in self.groups:
            group.mkdir(exist_ok=True)
        with (self.folder / "systemd.log").open("a") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _boot(), "boot"]
                + [str(g) for g in self.groups],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_until_up(self.process, self.folder, self.env)

    def stop(self) -> None:
        """As at shutdown: the manager stops its units (SIGTERM, then SIGKILL) and exits."""
        if self.process is not None:
            _stop(self.process)
        for group in self.groups:
            _remove_cgroup(group)

    def restart(self) -> None:
        """As a reboot does it for a lingering user: the manager starts its enabled units."""
        self.stop()
        self.start()


@contextmanager
def user_manager() -> Iterator[UserManager]:
    folder = Path(tempfile.mkdtemp(prefix="ow-sd-"))
    manager = UserManager(folder)
    for name in manager.env.values():
        Path(name).mkdir(mode=0o700)
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def reaching(env: dict[str, str]) -> Iterator[None]:
    """This process's systemctl calls (onwatch's) go to the manager of `env`, which a
    machine new to onwatch takes as the user's (the tests' environment names supervisord)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CHOICE, "auto")
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def systemctl(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["systemctl", "--user", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip()


def _cgroup_bases() -> list[Path]:
    """cgroup2 alone, or (as here) the hybrid layout: systemd's named v1 hierarchy and the
    unified one beside it."""
    if (CGROUP / "cgroup.controllers").exists():
        return [CGROUP]
    return [base for base in (CGROUP / "systemd", CGROUP / "unified") if base.is_dir()]


def _boot() -> str:
    return BOOT.replace("{systemd}", SYSTEMD)


def _wait_until_up(manager: subprocess.Popen[bytes], folder: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if systemctl(env, "show", "--property=SystemState", "--value") in ("running", "degraded"):
            return
        if manager.poll() is not None:
            break
        time.sleep(0.05)
    said = (folder / "systemd.log").read_text(errors="replace").strip().splitlines()
    raise AssertionError(f"systemd --user did not start: {said[-3:]}")


def _stop(manager: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the manager stops its units (SIGTERM, then SIGKILL) and exits."""
    if manager.poll() is None:
        manager.send_signal(signal.SIGTERM)
        try:
            manager.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            manager.kill()
            manager.wait()


def _remove_cgroup(group: Path) -> None:
    """Its folders, deepest first; any process still in them is killed first."""
    if not group.exists():
        return
    folders = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for folder in [*folders, group]:
        for pid in (folder / "cgroup.procs").read_text().split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    for folder in [*folders, group]:
        while True:
            try:
                folder.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
