"""Workers on this machine hear at once that a job was queued, not at their next poll.

Each worker listens on a unix datagram socket in `<data dir>/wakeup/`; queueing a job sends
one byte to each of them once its transaction has committed. A pipeline then starts some
10 ms after it was queued instead of half a poll (ONWATCH_JOB_POLL_SECONDS) later on
average. Workers on other machines, and any that cannot listen, still find new jobs at
their next poll: a lost wake-up costs at most that.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import suppress
from pathlib import Path

from django.conf import settings

log = logging.getLogger("onwatch.worker")

# How often a listener looks whether it was closed while no wake-up came.
CLOSE_CHECK_SECONDS = 0.5


def folder() -> Path:
    return Path(settings.DATA_DIR) / "wakeup"


class Listener:
    """Sets `wake` whenever a job is queued on this machine, until closed."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.closed = threading.Event()
        self.path = folder() / f"w{os.getpid()}-{threading.get_ident() % 100000}.sock"
        self.sock: socket.socket | None = None
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            with suppress(FileNotFoundError):
                self.path.unlink()  # left by a process that had this number before
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(self.path))
            sock.settimeout(CLOSE_CHECK_SECONDS)
        except OSError as e:
            # A path too long for a socket (over 107 bytes), a read-only folder: poll only.
            log.info("new jobs are found by polling only: cannot listen at %s (%s)", self.path, e)
            return
        self.sock = sock
        threading.Thread(target=self.listen, name="wakeup", daemon=True).start()

    def listen(self) -> None:
        assert self.sock is not None
        while not self.closed.is_set():
            try:
                self.sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self.wake.set()

    def close(self) -> None:
        self.closed.set()
        if self.sock is not None:
            self.sock.close()
            with suppress(OSError):
                self.path.unlink()


def poke() -> None:
    """Wake every worker listening on this machine; never fails the caller."""
    try:
        names = os.listdir(folder())
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            if not name.endswith(".sock"):
                continue
            path = folder() / name
            try:
                sock.sendto(b"!", str(path))
            except ConnectionRefusedError:
                # Nobody listens there any more (a worker that was killed): tidy up.
                with suppress(OSError):
                    path.unlink()
            except OSError:
                pass  # its queue is full (it is awake anyway) or the file went away
