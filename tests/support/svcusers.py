"""The services' users a test session makes on this machine, removed when it ends.

As root, each service gets a system user of its own (onwatch/deploys/svcusers.py), and a
deleted service's user stays as a locked tombstone that holds its uid for good. Tests
make and delete hundreds of services: left alone, their users would fill the system uid
range (about 900 ids) within a few runs, and onwatch would then refuse every new service.
Every name a session's onwatch makes starts with the session's prefix (tests.support.env:
`owt<pid>-`), so the session removes its own at its end, and at its start those of
sessions whose process is gone (killed before they could clean up).
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# The prefix tests.support.env gives each test process; the pid is the process's own.
SESSION_PREFIX = re.compile(r"owt(\d+)-")


def remove_users(prefix: str) -> list[str]:
    """Remove every user whose name starts with `prefix` (its own group goes with it)."""
    gone = [u.pw_name for u in pwd.getpwall() if u.pw_name.startswith(prefix)]
    for name in gone:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    return gone


def ended_sessions() -> set[str]:
    """The prefixes of test sessions with users left whose process has ended."""
    found = {m.group(0) for u in pwd.getpwall() if (m := SESSION_PREFIX.match(u.pw_name))}
    return {p for p in found if not Path(f"/proc/{p[3:-1]}").exists()}


@pytest.fixture(autouse=True, scope="session")
def service_users_removed() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    for prefix in ended_sessions():
        remove_users(prefix)
    yield
    remove_users(os.environ["ONWATCH_SERVICE_USER_PREFIX"])
