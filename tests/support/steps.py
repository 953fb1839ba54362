"""Pipeline steps for sandbox tests: folders the step user can reach, output collected with
the time each chunk came, and the processes of a step found on the host by a marker."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex


@contextmanager
def reachable_root() -> Iterator[Path]:
    """A folder others may pass through (pytest's tmp_path is closed to them): when tests
    run as root, the step user must reach the workspaces made in it. Outside /tmp where
    it can be: a step gets a /tmp of its own, which would hide what is in the host's even
    if the sandbox showed the whole machine."""
    base = "/srv" if os.access("/srv", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="onwatch-steps-", dir=base))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def folder(root: Path, name: str, mode: int = 0o755) -> Path:
    path = root / name
    path.mkdir()
    path.chmod(mode)
    return path


@dataclass
class Output:
    """What on_output received, and when (time.monotonic())."""

    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append((time.monotonic(), chunk))

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


def marker() -> str:
    """A word to put in a step's command line, to find its processes on the host."""
    return f"step-{token_hex(6)}"


def processes_with(word: str) -> list[int]:
    """Live (not zombie) processes whose command line contains word."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if word.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process, as the host sees them."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(u) for u in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")
