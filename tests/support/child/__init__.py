"""Functions that run in a child process against a real onwatch's database: the test
process itself is bound to pytest-django's database, so code that must see the database
of an onwatch under test runs beside it, after onwatch's own start-up checks (the same
database, key file and settings as its processes).

The functions live in this package's modules, where ruff and mypy check them like any
other code; `call` runs one by name with JSON arguments:

    out = call(keys.add_monitor, env, "Acme")      # its stdout
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from tests.support.procs import ROOT


def call(
    func: Callable[..., object],
    env: dict[str, str],
    *args: object,
    migrate: bool = False,
    timeout: float = 90,
) -> str:
    """Run func(*args) in a process of its own against the database `env` names; its
    stdout. The arguments go as JSON; a failure raises with the child's stderr."""
    argv = [sys.executable, "-m", "tests.support.child", f"{func.__module__}:{func.__name__}"]
    argv += [json.dumps(list(args))] + (["--migrate"] if migrate else [])
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"helper process failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def wait_until[T](cond: Callable[[], T], timeout: float = 60.0) -> T:
    """Poll a condition the way tests poll HTTP: no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        time.sleep(0.1)
    return value
