"""slirp4netns, the network of pipeline steps: the only module that runs it.

Each step has a network namespace apart from this machine's (with its own loopback: the
step's own, or the one its pipeline's steps share, sandbox.Network), and slirp4netns
gives it outbound IPv4 through this machine's own sockets: package registries, git
servers, any address but this machine's loopback (--disable-host-loopback). So a step
cannot reach what listens on 127.0.0.1 here: onwatch's web port, a local database,
Caddy's admin API. What listens on every address (0.0.0.0) stays reachable at the
machine's other addresses, as it is from any machine on its network.

slirp4netns runs as the step's user (it joins the sandbox's user namespace, which that
user owns), with its system calls filtered, and ends when onwatch closes its exit pipe or
dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import tempfile
import threading
from typing import IO

PROGRAM = "slirp4netns"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# slirp4netns's own addresses: the step is 10.0.2.100, and 10.0.2.3 forwards DNS to the
# machine's resolver (which may itself be on the machine's loopback, out of the step's).
RESOLV_CONF = b"nameserver 10.0.2.3\n"
# The largest it takes: far fewer packets for a download than the default 1500.
MTU = 65520
READY_SECONDS = 10
NS_GET_USERNS = 0xB701  # ioctl of linux/nsfs.h: the user namespace owning a namespace
STOP_SECONDS = 5


class NetworkError(Exception):
    """The step's network could not be set up; the message is for people."""


def missing() -> str | None:
    """None when steps can have a network of their own here; else what to install."""
    if shutil.which(PROGRAM, path=PATH) is None:
        return "install slirp4netns (apt-get install slirp4netns)"
    return None


class Network:
    """slirp4netns attached to the network namespace of the sandbox whose pid 1 is `pid`."""

    def __init__(self, pid: int, user: tuple[int, int] | None) -> None:
        # Read only when it fails; closed by stop().
        self.output: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # Opened here, where the sandbox's /proc entries are ours to open; slirp4netns
        # gets them as paths of its own descriptors. The user namespace is the one that
        # owns the network namespace: the sandbox's own may be a nested one by now
        # (bubblewrap's --disable-userns), in which slirp4netns could not configure it.
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            userns = fcntl.ioctl(netns, NS_GET_USERNS)
        except OSError:
            os.close(netns)
            raise
        ready_r, ready_w = os.pipe()
        self.exit_r, self.exit_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                _argv(user, userns, netns, ready_w, self.exit_r),
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=self.output,
                env={"PATH": PATH},
                pass_fds=(userns, netns, ready_w, self.exit_r),
                start_new_session=True,
            )
        finally:
            for fd in (userns, netns, ready_w, self.exit_r):
                os.close(fd)
        try:
            self._wait_ready(ready_r)
        except NetworkError:
            self.stop()
            raise
        finally:
            os.close(ready_r)

    def _wait_ready(self, ready_r: int) -> None:
        if select.select([ready_r], [], [], READY_SECONDS)[0] and os.read(ready_r, 1) == b"1":
            return
        self.proc.kill()
        self.proc.wait()
        self.output.seek(0)
        said = self.output.read().decode(errors="replace").strip().splitlines()
        cause = said[-1] if said else f"no answer within {READY_SECONDS} s"
        raise NetworkError(
            f"slirp4netns could not give the step its network ({cause}); check that "
            "slirp4netns runs here (slirp4netns --version), or uninstall it to let steps "
            "share this machine's network"
        )

    def stop(self) -> None:
        """End slirp4netns: its exit pipe closes and it ends by itself (or is killed after
        STOP_SECONDS). Its end is not waited for here: the kernel takes some 20 ms to remove
        its tap device with the step's network namespace, which every step would add to
        its time. A thread waits, and reaps it."""
        if self.exit_w >= 0:
            os.close(self.exit_w)
            self.exit_w = -1
        threading.Thread(target=self._reap, name="slirp4netns-stop", daemon=True).start()

    def _reap(self) -> None:
        if not _ended_within(self.proc, STOP_SECONDS):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.wait()
        self.output.close()


def _ended_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether `proc` ended within `seconds`, known the moment it does (Popen.wait with a
    timeout polls, with growing sleeps)."""
    if proc.returncode is not None:
        return True  # reaped already: its pid may be another process's by now
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return True  # already reaped
    try:
        return bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


def _argv(
    user: tuple[int, int] | None, userns: int, netns: int, ready: int, exit_: int
) -> list[str]:
    argv = [PROGRAM, "--configure", f"--mtu={MTU}", "--disable-host-loopback"]
    argv += ["--enable-seccomp", f"--ready-fd={ready}", f"--exit-fd={exit_}"]
    argv += [f"--userns-path=/proc/self/fd/{userns}", "--netns-type=path"]
    argv += [f"/proc/self/fd/{netns}", "tap0"]
    if user is not None:
        uid, gid = user
        drop = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all"]
        argv = ["setpriv", *drop, "--", *argv]
    return argv
