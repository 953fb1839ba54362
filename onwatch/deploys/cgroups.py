"""The control group a pipeline step runs in: its memory and process limits, and a way to
stop every process in it at once. Used by sandbox.py only.

A step's group is made inside onwatch's own group (from /proc/self/cgroup), so whatever
limits an administrator put on onwatch still cover its steps. Each controller (memory,
pids) is taken from whichever hierarchy has it: cgroup v1 mounts one per controller, v2
one for all. Where none can be made (not root, no delegation) the sandbox falls back to
rlimits and says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex

CONTROLLERS = ("memory", "pids")
PREFIX = "onwatch-step-"


@dataclass(frozen=True)
class Hierarchy:
    mount: Path  # where it is mounted
    root: str  # the part of the hierarchy the mount shows ("/" outside containers)
    v2: bool

    def own_group(self, path: str) -> Path:
        """The directory of a group whose path /proc/self/cgroup names."""
        inside = os.path.relpath(path, self.root) if path.startswith(self.root) else path
        return (self.mount / inside.lstrip("/")).resolve()


@dataclass
class Group:
    """One step's groups: one directory per hierarchy used (v1: memory and pids apart)."""

    dirs: dict[str, Path] = field(default_factory=dict)  # controller -> its directory
    v2: dict[str, bool] = field(default_factory=dict)

    def procs_files(self) -> list[Path]:
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def oom_kills(self) -> int:
        """How many of its processes the kernel killed for going over the memory limit."""
        if "memory" not in self.dirs:
            return 0
        name = "memory.events" if self.v2["memory"] else "memory.oom_control"
        return _counter(self.dirs["memory"] / name, "oom_kill")

    def forks_refused(self) -> int:
        """How many times a process in it could not start another: the limit was reached."""
        if "pids" not in self.dirs:
            return 0
        return _counter(self.dirs["pids"] / "pids.events", "max")

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
        return found

    def kill(self, timeout: float = 10.0) -> bool:
        """SIGKILL everything in it until it is empty; False if something outlived timeout."""
        deadline = time.monotonic() + timeout
        # A fork bomb forks between reading the list and the kill; the pids limit bounds
        # it, so a few rounds catch every one.
        while pids := self.pids():
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        return True

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            # Killed processes leave the group a moment after they are reaped.
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _counter(path: Path, name: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def _hierarchies() -> dict[str, Hierarchy]:
    """controller -> the hierarchy that has it, from /proc/self/mountinfo."""
    found: dict[str, Hierarchy] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        parts, (fstype, _source, options) = fields.split(), tail.split()[:3]
        root, mount = parts[3], Path(parts[4])
        if fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options.split(","):
                    found[name] = Hierarchy(mount, root, v2=False)
        elif fstype == "cgroup2":
            for name in CONTROLLERS:
                found.setdefault(name, Hierarchy(mount, root, v2=True))
    return found


def _own_paths() -> dict[str, str]:
    """controller -> this process's group in its hierarchy ("" for v2's unified one)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _sweep(controller: str, parent: Path, v2: bool) -> None:
    """Remove the groups of steps whose onwatch died, so they do not pile up over
    restarts. Its steps died with it (bwrap's --die-with-parent), or are dying: whatever is
    left is killed first."""
    for d in parent.glob(f"{PREFIX}*"):
        try:
            os.kill(int(d.name.removeprefix(PREFIX).split("-")[0]), 0)
        except ProcessLookupError:
            orphan = Group({controller: d}, {controller: v2})
            orphan.kill(timeout=2)
            orphan.remove()
        except (ValueError, PermissionError):
            continue


def _make(parent: Path, name: str, v2: bool, controller: str) -> Path | None:
    if v2:
        available = (parent / "cgroup.controllers").read_text().split()
        if controller not in available:
            return None
        # Fails (EBUSY) when onwatch's own group holds processes and is not the root: v2
        # gives controllers only to groups without processes of their own.
        (parent / "cgroup.subtree_control").write_text(f"+{controller}")
    child = parent / name
    child.mkdir(exist_ok=True)
    return child


def _limit(group: Group, controller: str, value: int) -> None:
    d, v2 = group.dirs[controller], group.v2[controller]
    if controller == "pids":
        (d / "pids.max").write_text(str(value))
    elif v2:
        (d / "memory.max").write_text(str(value))
        # Swap would let a step go far past its memory limit, slowly.
        with contextlib.suppress(OSError):
            (d / "memory.swap.max").write_text("0")
    else:
        (d / "memory.limit_in_bytes").write_text(str(value))
        with contextlib.suppress(OSError):  # only where swap is accounted
            (d / "memory.memsw.limit_in_bytes").write_text(str(value))


def parents() -> dict[str, tuple[Path, bool]]:
    """controller -> (onwatch's own group in its hierarchy, whether that is v2): where
    the groups of steps are made."""
    found, own = {}, _own_paths()
    for controller, hierarchy in _hierarchies().items():
        path = own.get("" if hierarchy.v2 else controller)
        if path is not None:
            found[controller] = (hierarchy.own_group(path), hierarchy.v2)
    return found


def create(memory_bytes: int, processes: int) -> Group:
    """A new group with the limits it could take; empty (no dirs) when it could take none."""
    # The creator's pid in the name: groups left by an onwatch that died are found by it.
    group, name = Group(), f"{PREFIX}{os.getpid()}-{token_hex(4)}"
    limits = {"memory": memory_bytes, "pids": processes}
    where = parents()
    for controller, (parent, v2) in where.items():
        try:
            _sweep(controller, parent, v2)
            made = _make(parent, name, v2, controller)
            if made is None:
                continue
            group.dirs[controller], group.v2[controller] = made, v2
            _limit(group, controller, limits[controller])
        except OSError:
            group.dirs.pop(controller, None)
    # Made for a controller that then refused its limit: not used.
    for parent, _v2 in where.values():
        if (parent / name) not in group.dirs.values():
            with contextlib.suppress(OSError):
                (parent / name).rmdir()
    return group
