"""Where a service's releases run: this machine or an SSH host, each a `Place` that a
deploy asks to take a release's tree, build it, switch its site to it and say what serves
there. releases.py deploys to every place of a service in turn, all or nothing; this module
holds the seam and this machine's place (LocalPlace), which wraps switch.py's Machine. An
SSH host's place is remote.py's RemotePlace (an agent on the host, over SSH)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from onwatch.deploys import caddy, procman, sandbox, switch, workdir
from onwatch.deploys.agent import Sum, summed


class PlaceError(Exception):
    """A place could not do what was asked; the message is one line: what, and what to do."""


@dataclass(frozen=True)
class Ran:
    exit_code: int | None  # None: it did not run to its end
    reason: str | None  # why it ended early ("timed out after 1800 s", "cancelled",
    # "the host ran out of disk space"), else None
    seconds: float
    last_lines: list[str]  # its last 3 lines (the caller masks them)
    unsandboxed: str = ""  # why it ran outside a sandbox (an SSH host without bubblewrap)


@dataclass(frozen=True)
class Counted:
    """What a place's Caddy logged of a site from an offset of its log: the answers summed
    by second and slot there (agent.Sum; an SSH host sends those, not each line), timed by
    the place's clock; where the next read begins; and the place's own now as it read them
    (Unix seconds; None from an agent too old to say), by which the watch times them by
    onwatch's clock: a host whose clock is off would bend its windows."""

    sums: list[Sum]
    offset: int
    clock: float | None


class Place(Protocol):
    """Every method raises PlaceError (one line) when the place cannot be reached or
    fails; `switch` raises switch.SwitchFailed as switch.switch does."""

    name: str  # "this machine", or the host's name (user@address[:port])

    # its process manager (supervisord, or systemd's user manager: systemd.manager) and
    # Caddy running there
    def ensure_ready(self) -> None: ...

    # free loopback ports there (slots), none of `avoid` (slots kept for other services)
    def free_ports(self, count: int, avoid: frozenset[int] = frozenset()) -> list[int]: ...

    # as caddy.Caddy.put_site
    def put_site(self, site: caddy.Site) -> bool: ...

    def release_folder(self, service_id: int, release_id: int) -> str: ...

    def has_folder(self, folder: str) -> bool: ...

    # a checked-out tree (no .git), copied there fresh
    def receive(self, folder: str, source: Path) -> None: ...

    def run(
        self,
        folder: str,
        command: str,
        env: Mapping[str, str],
        seconds: float,
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Ran: ...

    # as switch.switch: raises switch.SwitchFailed with its record
    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch: ...

    # label of what serves it there
    def serving(self, site: caddy.Site) -> str | None: ...

    def remove_folders(self, folders: list[str]) -> None: ...

    # slots off, programs and sites gone
    def stop_serving(self, ports: set[int]) -> None: ...

    # Caddy's count of the site's answers there (caddy.py's), for the watch of a release:
    # from a log emptied first; read a piece at a time; stopped, and its lines gone.
    def start_counting(self, domain: str) -> None: ...

    def counting(self, domain: str) -> bool: ...

    def counted_from(self, domain: str, offset: int) -> Counted: ...

    # all since the count began, as a switch's before_count reads them
    def counted_before(self, domain: str) -> list[Sum]: ...

    def stop_counting(self, domain: str) -> None: ...

    def close(self) -> None: ...


# Ports this process handed out as slots: two places on one machine (tests, a second
# onwatch root) must not be given the same ones before either has bound them.
_handed_out: set[int] = set()


class LocalPlace:
    """This machine (or a Machine of its own, with its own root and Caddy ports). Its
    releases are built by releases.py in the sandbox, where they were checked out: its
    `run` is there for a caller that has a tree and a command only."""

    def __init__(self, machine: switch.Machine, name: str = "this machine") -> None:
        self.machine, self.name = machine, name

    def ensure_ready(self) -> None:
        with _said():
            self.machine.ensure_running()

    def free_ports(self, count: int, avoid: frozenset[int] = frozenset()) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < count:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out and port not in avoid:
                _handed_out.add(port)
                chosen.append(port)
        return chosen

    def put_site(self, site: caddy.Site) -> bool:
        with _said():
            return self.machine.caddy.put_site(site)

    def release_folder(self, service_id: int, release_id: int) -> str:
        return str(workdir.release_folder(service_id, release_id))

    def has_folder(self, folder: str) -> bool:
        return Path(folder).is_dir()

    def receive(self, folder: str, source: Path) -> None:
        """Nothing to copy when the tree was checked out in that very folder."""
        if Path(folder).resolve() == source.resolve():
            return
        try:
            workdir.remove_workspace(Path(folder))
            shutil.copytree(source, folder, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        except OSError as e:
            raise PlaceError(f"the release could not be copied to {folder}: {e}") from None

    def run(
        self,
        folder: str,
        command: str,
        env: Mapping[str, str],
        seconds: float,
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Ran:
        """In the sandbox, on this machine's network (as a release command runs)."""
        lines = _Lines(on_line)
        step = sandbox.Step(
            argv=["bash", "-c", command],
            workspace=Path(folder),
            env=dict(env),
            limits=sandbox.Limits(seconds=seconds),
            host_network=True,
        )
        try:
            outcome = sandbox.run(step, lines.feed, cancelled)
        except sandbox.SandboxError as e:
            raise PlaceError(str(e)) from None
        lines.end()
        # The sandbox words an exit code as a reason too; a Ran's reason is an early end's.
        early = outcome.reason if outcome.exit_code is None else None
        return Ran(outcome.exit_code, early, outcome.seconds, lines.last)

    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch:
        return switch.switch(
            self.machine, site, release, on_step, gate, keep_counting, before_count
        )

    def serving(self, site: caddy.Site) -> str | None:
        labels = [label for p in site.ports if (label := self.machine.caddy.live_label(p))]
        return labels[0] if labels else None

    def remove_folders(self, folders: list[str]) -> None:
        for folder in folders:
            try:
                workdir.remove_workspace(Path(folder))
            except OSError as e:
                raise PlaceError(f"{folder} could not be removed: {e}") from None

    def stop_serving(self, ports: set[int]) -> None:
        with _said():
            if switch.left_behind(self.machine, ports):  # else not started for nothing
                switch.stop_serving(self.machine, ports)

    def start_counting(self, domain: str) -> None:
        with _said():
            self.machine.caddy.start_counting(domain)

    def counting(self, domain: str) -> bool:
        with _said():
            return self.machine.caddy.counting(domain)

    def counted_from(self, domain: str, offset: int) -> Counted:
        with _said():
            answers, offset = self.machine.caddy.counted_from(domain, offset)
        return Counted(summed(answers), offset, time.time())

    def counted_before(self, domain: str) -> list[Sum]:
        with _said():
            return summed(self.machine.caddy.counted(domain))

    def stop_counting(self, domain: str) -> None:
        with _said():
            self.machine.caddy.stop_counting(domain)
            self.machine.caddy.forget_answers(domain)

    def close(self) -> None:
        pass


@contextmanager
def _said() -> Iterator[None]:
    """Caddy's and the process manager's errors as PlaceError (their messages say what to
    do)."""
    try:
        yield
    except (caddy.CaddyError, procman.ProcmanError, ValueError, OSError) as e:
        raise PlaceError(str(e)) from None


class _Lines:
    """Bytes as they come, to whole lines for `on_line`, the last 3 kept."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line, self.rest, self.last = on_line, b"", list[str]()

    def feed(self, chunk: bytes) -> None:
        *whole, self.rest = (self.rest + chunk).split(b"\n")
        for line in whole:
            self._one(line)

    def end(self) -> None:
        if self.rest:
            self._one(self.rest)
            self.rest = b""

    def _one(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self.last = [*self.last, line][-3:]
        self.on_line(line)
