"""Real onwatch processes for tests: an isolated data directory, a free port and, when the
suite runs on PostgreSQL, a fresh database of the test's own."""

from __future__ import annotations

import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ONWATCH = [sys.executable, "-m", "onwatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def fresh_database() -> Iterator[str | None]:
    """A new empty PostgreSQL database when the suite runs on PostgreSQL, else None."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        yield None
        return
    name = f"ow_{secrets.token_hex(6)}"
    admin = psycopg.connect(base, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base)
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
        ONWATCH_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


@contextmanager
def isolated(tmp_path: Path, **extra: str) -> Iterator[dict[str, str]]:
    """Environment for a real onwatch: its own data dir, port and database."""
    with fresh_database() as url:
        yield onwatch_env(tmp_path / "data", url, **extra)


def run(
    args: list[str], env: dict[str, str], timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ONWATCH, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )


class Running:
    """A background onwatch process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [*ONWATCH, *args],
            env=env,
            cwd=ROOT,
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

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first output line containing `text`, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if text in line:
                    return line
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
