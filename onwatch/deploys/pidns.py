"""The processes of one step, found by its pid namespace: how the sandbox counts them and
their memory where no cgroup does it (sandbox.py only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def members(namespace: int) -> list[int]:
    """Pids (as onwatch sees them) of the processes in pid namespace `namespace`."""
    wanted, found = f"pid:[{namespace}]", []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") == wanted:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def private_bytes(pids: Iterable[int]) -> int:
    """Memory the processes hold in RAM beyond the files they map (programs, libraries),
    together; what forked processes still share is counted in each."""
    total = 0
    for pid in pids:
        try:
            _size, resident, file_backed, *_ = Path(f"/proc/{pid}/statm").read_text().split()
            total += (int(resident) - int(file_backed)) * PAGE
        except (OSError, ValueError):
            continue
    return total
