"""Where a service's releases run: this machine or an SSH host, behind one seam (Place)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from onwatch.deploys import caddy, switch


class PlaceError(Exception):
    """A place could not do what was asked; the message is one line: what, and what to do."""


@dataclass(frozen=True)
class Ran:
    exit_code: int | None  # None: it did not run to its end
    reason: str | None  # why it ended early ("timed out after 1800 s", "cancelled",
    # "the host ran out of disk space"), else None
    seconds: float
    last_lines: list[str]  # its last 3 lines (the caller masks them)


class Place(Protocol):
    name: str  # "this machine", or the host's name (user@address[:port])

    def ensure_ready(self) -> None: ...  # supervisord + Caddy running there
    def free_ports(self, count: int) -> list[int]: ...  # free loopback ports there (slots)
    def put_site(self, site: caddy.Site) -> bool: ...  # as caddy.Caddy.put_site
    def release_folder(self, service_id: int, release_id: int) -> str: ...
    def has_folder(self, folder: str) -> bool: ...
    def receive(self, folder: str, source: Path) -> None: ...  # a checked-out tree (no .git),
    # copied there fresh
    def run(
        self,
        folder: str,
        command: str,
        env: Mapping[str, str],
        seconds: float,
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Ran: ...
    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch: ...
    # as switch.switch: raises switch.SwitchFailed with its record
    def serving(self, site: caddy.Site) -> str | None: ...  # label of what serves it there
    def remove_folders(self, folders: list[str]) -> None: ...
    def stop_serving(self, ports: set[int]) -> None: ...  # slots off, programs and sites gone
    def close(self) -> None: ...
