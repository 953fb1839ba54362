"""Scratch space for drills, and saying so plainly when it runs out.

A full disk shows up in many voices: ENOSPC from Python, restic's "no space left on
device", SQLite's "database or disk is full", PostgreSQL's "could not extend file". Each
becomes one ScratchFull that says which disk or server filled up and what to do.
"""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from onwatch.backups import conf
from onwatch.backups.kinds import on_server
from onwatch.backups.models import Plan, Source

# The words of a full disk, most telling first (PostgreSQL's names the file it could not
# grow, restic's the file it could not write).
FULL = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r'could not extend file "[^"]*": no space left on device',
        r"no space left on device writing [^\s;]+",
        r"write \S+: no space left on device",
        r"no space left on device",
        r"database or disk is full",
        r"disk quota exceeded",
    )
]


class ScratchFull(Exception):
    """The scratch target ran out of space; the message is for people."""


def root() -> Path:
    return Path(conf.scratch_dir() or tempfile.gettempdir())


def disk_full(error: BaseException) -> str | None:
    """What says the disk is full, or None when `error` is about something else."""
    text = str(error)
    for pattern in FULL:
        if found := pattern.search(text):
            return found.group(0)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return text
    return None


def server_of(source: Source) -> str:
    """host:port of the server drills restore into (the source's own when none is set)."""
    if source.scratch_url:
        u = urlsplit(source.scratch_url)
        host, port = u.hostname or "127.0.0.1", u.port
    else:
        host, port = source.host or "127.0.0.1", source.port
    return f"{host}:{port}" if port else host


def where(plan: Plan) -> str:
    if on_server(plan.source):
        return f"the data disk of the scratch server {server_of(plan.source)}"
    path = root()
    try:
        size = f", {shutil.disk_usage(path).total // (1 << 20)} MB in all"
    except OSError:
        size = ""
    return f"the scratch disk at {path}{size}"


def advice(plan: Plan) -> str:
    if on_server(plan.source):
        return "free space there or give the source a scratch server with more room"
    return "free space there or point ONWATCH_SCRATCH_DIR at a disk with more room"


@contextmanager
def full_disk_explained(plan: Plan) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        line = disk_full(e)
        if line is None:
            raise
        raise ScratchFull(
            f"the drill ran out of space on {where(plan)} ({line}); {advice(plan)}"
        ) from e
