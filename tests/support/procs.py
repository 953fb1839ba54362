"""Real onwatch processes for tests: an isolated data directory, a free port and, when the
suite runs on PostgreSQL, a fresh database of the test's own."""

from __future__ import annotations

import os
import queue
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
ONWATCH = [sys.executable, "-m", "onwatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def fresh_database(template: str | None = None) -> Iterator[str | None]:
    """A new PostgreSQL database (empty, or a copy of `template`) when the suite runs on
    PostgreSQL, else None."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        yield None
        return
    # Imported here, not above: every child process of tests.support.child imports this
    # module, and on SQLite the driver alone was a quarter second of CPU each.
    import psycopg

    name = f"ow_{secrets.token_hex(6)}"
    parts = urlsplit(base)
    # The server's maintenance database always exists; the one DATABASE_URL names (whose
    # test_ twin pytest-django makes) need not.
    admin = psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)
    copy = f' TEMPLATE "{template}"' if template else ""
    admin.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def onwatch_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ONWATCH_", "DJANGO_")) and k not in ("DATABASE_URL", "SECRET_KEY")
    }
    env.update(
        ONWATCH_DATA_DIR=str(data_dir),
        # Never the tester's own ~/.ssh/authorized_keys.
        ONWATCH_AUTHORIZED_KEYS=str(data_dir / "authorized_keys"),
        ONWATCH_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


@contextmanager
def isolated(tmp_path: Path, migrated: bool = False, **extra: str) -> Iterator[dict[str, str]]:
    """Environment for a real onwatch: its own data dir, port and database, and a work
    folder for pipelines that the step user can reach (tmp_path is closed to others).

    migrated: start from a copy of the run's migrated onwatch (tests.support.template), as
    `onwatch migrate` leaves a new install, for tests whose subject is not the first start
    or the migrations; else from nothing at all."""
    from tests.support import template
    from tests.support.steps import reachable_root

    base = os.environ.get("DATABASE_URL", "")
    made = template.migrated(base if base.startswith("postgres") else None) if migrated else None
    with fresh_database(made.database if made else None) as url, reachable_root() as reachable:
        work = {"ONWATCH_WORK_DIR": str(reachable / "work"), **extra}
        env = onwatch_env(tmp_path / "data", url, **work)
        if made is not None:
            key_file = env.get("ONWATCH_KEY_FILE") or str(tmp_path / "data" / "keyring.json")
            template.copy_into(made, tmp_path / "data", Path(key_file))
        yield env


def run(
    args: list[str], env: dict[str, str], timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [*ONWATCH, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    return done


class Running:
    """A background onwatch process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        """cwd: the checkout whose onwatch runs (a bench compares another's, e.g. main's)."""
        self.env = env
        self.proc = subprocess.Popen(
            [*ONWATCH, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)

    def wait_for(self, text: str, timeout: float = 30, nth: int = 1) -> str:
        """The nth output line containing `text`, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if text in line]
            if len(found) >= nth:
                return found[nth - 1]
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self._q.empty()):
                raise AssertionError(f"no {text!r} in output:\n" + "\n".join(self.lines))
            with suppress(queue.Empty):
                self._q.get(timeout=min(left, 0.2))

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.env['ONWATCH_PORT']}"

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # Children left behind by a failed test must not outlive it.
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)


def port_freed(port: int, timeout: float = 15) -> None:
    """Wait until nothing listens on the loopback port: a stopped onwatch's web workers,
    killed with its process group, may hold it for a moment after their parent is gone
    (and a new `onwatch up` on it rightly refuses a port in use)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still answers {timeout} s after onwatch stopped")
        time.sleep(0.05)


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


# Run after onwatch's own start-up checks, so the code sees the same database, key file
# and settings as the onwatch processes of the test.
# wait_until(cond) polls a condition the way tests poll HTTP: no fixed sleeps.
_PRELUDE = """
import json, time
from onwatch.startup import prepare
prepare(migrate={migrate})

def wait_until(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        time.sleep(0.1)
    return value
"""


def django(code: str, env: dict[str, str], migrate: bool = False, timeout: float = 90) -> str:
    """Run Python code against a test's onwatch database in a process of its own (the
    test process itself is bound to pytest-django's database). Returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE.format(migrate=migrate) + textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"helper process failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def started_pids(proc: Running, name: str) -> list[int]:
    """Pids `onwatch up` logged for a child, oldest first ("worker started (pid 123)")."""
    marker = f"{name} started (pid "
    return [int(line.split(marker)[1].split(")")[0]) for line in proc.lines if marker in line]


def children_pids(proc: Running) -> list[int]:
    """The first pid of every child `onwatch up` starts, once each has been logged."""
    from onwatch.supervisor import children

    names = [c.name for c in children()]
    for name in names:
        proc.wait_for(f"{name} started (pid ")
    return [started_pids(proc, name)[0] for name in names]


def argv_of(pid: int, program: str) -> str:
    """The command line of a process just started, once it runs `program`: right after
    Popen it may still show the parent's command line, or read empty mid-execve."""
    deadline = time.monotonic() + 10
    while True:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        args = cmdline.split(b"\0")
        if args and Path(args[0].decode()).name == program:
            return cmdline.replace(b"\0", b" ").decode()
        assert time.monotonic() < deadline, f"process {pid} never ran {program}: {cmdline!r}"
        time.sleep(0.01)
