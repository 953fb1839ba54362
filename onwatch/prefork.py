"""`onwatch web` with several web processes (ONWATCH_WEB_WORKERS > 1).

This process imports Django, the settings, every app and view once, binds the port, then
forks the web workers from itself: what they inherit stays one copy in memory (copy on
write) until a worker changes it, so a second web process costs some 15 MiB when idle,
not the ~75 MiB of an interpreter that imports everything again. The workers share the listening
socket and the kernel spreads connections between them. This process serves nothing:
it restarts a worker that dies (the supervisor's back-off) and, on SIGTERM or SIGINT,
stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from onwatch.supervisor import Child, Supervisor, die_with_parent

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("onwatch.web")


class Forked:
    """A forked web worker, through the part of subprocess.Popen the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"web worker {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def forker(config: uvicorn.Config, sock: socket.socket) -> Callable[[], Forked]:
    """What starts (and restarts) one web worker: a fork of this process serving `sock`."""

    def fork() -> Forked:
        # A thread would not exist in the child, and a lock it held would stay locked
        # there forever: a fork is only safe from a process that runs none.
        running = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if running:
            raise RuntimeError(f"cannot fork web workers while threads run: {running}")
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return Forked(pid)
        serve_forked(config, sock, parent)

    return fork


def serve_forked(config: uvicorn.Config, sock: socket.socket, parent: int) -> NoReturn:
    """In the forked child: serve until told to stop, then end the process (never return
    into the parent's code)."""
    import uvicorn

    code = 1
    try:
        die_with_parent(parent)
        # The parent's handlers only set its own flag; uvicorn installs its own.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        uvicorn.Server(config).run(sockets=[sock])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(config: uvicorn.Config, workers: int) -> int:
    """Load the app, bind the port, fork `workers` web workers and look after them."""
    from django.db import connections

    config.load()
    sock = config.bind_socket()
    # A connection opened here would be shared by every worker: each opens its own.
    connections.close_all()
    spawn = forker(config, sock)
    team = [Child(f"web worker {n}", [], spawn=spawn, log=log) for n in range(1, workers + 1)]
    return Supervisor(team, log=log).run()
