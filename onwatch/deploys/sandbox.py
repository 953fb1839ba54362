"""bubblewrap, the sandbox every pipeline step runs in: the only module that runs it.

A step sees a read-only system (/usr and the few files of /etc that name resolution, TLS
and user names need), its own workspace and dependency caches (writable), a private /tmp,
/proc and a minimal /dev, and a network of its own (slirp.py) with outbound access but not
to this machine (by loopback or any of its addresses) nor to link-local addresses such as
the cloud metadata service (netguard.py). It does not see onwatch's data directory, its
key file or anything else on the machine. It runs in new user, pid, mount, ipc, uts and network
namespaces, as an unprivileged user: when onwatch runs as root, as the Step's user (its
service's own, svcusers.py) or else ONWATCH_STEP_USER (nobody) — bubblewrap then runs as
that user too, so no process of the step is root outside the sandbox, and a user
namespace mapped to root never exists.

Limits: time (the whole tree is killed at the deadline), output size, memory and
processes (a cgroup where onwatch can make one, else rlimits; memory_enforced_by() says
which). `run` returns only when nothing of the step is left running.

For callers: the workspace and caches are existing folders, seen at the same paths inside
(so UV_CACHE_DIR, HOME or a JUnit path may name them), and must not hold the data
directory, the key file or the system; when onwatch runs as root they become the step
user's and must sit under folders others may pass through (0711), so not in the data
directory. A step given otherwise raises SandboxError with the fix, before anything runs.
The steps of one pipeline may share one such network (Network), made once: each step's
sandbox joins it, its other namespaces its own. Where slirp4netns is not installed, the
network is shared with the machine, loopback included (network_isolated() says which): a
service on 127.0.0.1 that trusts local connections without a password trusts the steps
too. A step given host_network (a release command, which must reach the app's database)
always shares it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NoReturn

from django.conf import settings

from onwatch.config import env
from onwatch.deploys import cgroups, netguard, phases, pidns, slirp

# The outer programs (sh, prlimit, setpriv, bwrap) get only this; the step's own
# environment travels to bubblewrap through a file descriptor, never through argv (which
# `ps` shows) or the outer programs' environment (LD_PRELOAD would act on them).
LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What DNS, TLS, user names, time zones and the dynamic linker read; nothing else of /etc.
ETC_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/mime.types",
)
POLL_MS = 100
NPROC_HEADROOM = 64
STOP_SECONDS = 10
MIN_VERSION = (0, 8)
# Where PostgreSQL and MariaDB/MySQL keep their socket files on Debian and its kin.
DATABASE_SOCKETS = ("/run/postgresql", "/var/run/postgresql", "/run/mysqld", "/var/run/mysqld")


class SandboxError(Exception):
    """The step cannot be run as given; the message is for people."""


@dataclass(frozen=True)
class Limits:
    seconds: float = 1800.0  # wall clock
    memory_bytes: int = 2 * 1024**3
    processes: int = 512  # processes and threads, as the kernel counts them
    output_bytes: int = 50 * 1024**2
    # Each line is a row of the log, which costs far more to store than its bytes: 50 MiB
    # of empty lines would be 50 million rows (hours of writing), so lines count too.
    output_lines: int = 200_000


# Step.argv of a sandbox made before its command is known (during the checkout that brings
# the file naming it): Ahead.start(argv) gives it.
LATER: Sequence[str] = ()
LATER_BYTES = 32 * 1024  # half what a pipe holds: written at once, before it is read


@dataclass(frozen=True)
class Step:
    argv: Sequence[str]  # LATER: given when it starts
    # Checkout, writable, the step's working directory; seen at the same path inside.
    workspace: Path
    env: Mapping[str, str]  # the whole environment of the step: nothing is inherited
    # name -> host folder, writable, at the same path inside (point UV_CACHE_DIR at it).
    caches: Mapping[str, Path] = field(default_factory=dict)
    limits: Limits = Limits()
    # Host folders the step may read but not change (tools onwatch gives it, like uv), at
    # the same path inside; they stay their owner's.
    readonly: Sequence[Path] = ()
    # A folder holding the workspace and the caches, bound whole instead of each of them:
    # one mount, so a tool may hard-link from a cache into the workspace (uv does; across
    # mounts it copies every file). Whatever else it holds is hidden, empty and read-only.
    # Only where steps run as their own user (shares_root()): the folder and those on the
    # way to the workspace and caches must be onwatch's, which the step cannot change.
    shared_root: Path | None = None
    # This machine's network, loopback and local database sockets included, instead of one
    # of its own: for a release command (migrations), whose database is usually here.
    host_network: bool = False
    # A network made for several steps (a pipeline's) that this one joins, rather than one
    # made for it alone: see Network. None, or where steps share the machine's, its own.
    network: Network | None = None
    # The user it runs as when onwatch runs as root: the service's own (svcusers.py);
    # empty, the step user every service shares (ONWATCH_STEP_USER).
    user: str = ""
    # The workspace and caches are the step user's already: an earlier step of the same
    # run handed them over, and nothing but that user's steps wrote there since. Walking
    # them again (the caches and the workspace's virtualenv: thousands of files) costs
    # every step tens of milliseconds.
    handed_over: bool = False


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None when the sandbox stopped it
    reason: str | None  # one plain line unless it ended by itself with 0
    seconds: float
    output_bytes: int


def problem() -> str | None:
    """None when steps can run here; else what is missing and what to do, in one line."""
    return _missing() or _trial()


def _missing() -> str | None:
    bwrap = shutil.which("bwrap", path=LAUNCH_ENV["PATH"])
    if bwrap is None:
        return "install bubblewrap: apt-get install bubblewrap"
    if (version := _version(bwrap)) < MIN_VERSION:
        have, need = (".".join(map(str, v)) for v in (version, MIN_VERSION))
        return (
            f"bubblewrap {have} is too old for onwatch's sandbox (--size, --disable-userns); "
            f"install {need} or newer (Debian 12, Ubuntu 24.04)"
        )
    if network_isolated() and (guard := netguard.missing()):
        return guard
    if os.geteuid() == 0:
        try:
            _step_user()
        except SandboxError as e:
            return str(e)
    return None


@cache
def _version(bwrap: str) -> tuple[int, ...]:
    said = subprocess.run([bwrap, "--version"], capture_output=True, text=True, env=LAUNCH_ENV)
    try:  # "bubblewrap 0.8.0"
        return tuple(int(n) for n in said.stdout.split()[-1].split("."))
    except (IndexError, ValueError):
        return (0,)


_trial_passed = False


def _trial() -> str | None:
    """bubblewrap may be there but not allowed to make namespaces: Ubuntu's AppArmor,
    a sysctl or a container can forbid it. Once it has worked, it is not tried again."""
    global _trial_passed
    if _trial_passed:
        return None
    out = bytearray()
    with tempfile.TemporaryDirectory(prefix="onwatch-sandbox-trial-") as tmp:
        try:
            done = run(Step(["true"], Path(tmp), {}, limits=Limits(seconds=30)), out.extend)
        except SandboxError as e:
            return str(e)
    if done.exit_code == 0:
        _trial_passed = True
        return None
    said = (out.decode(errors="replace").strip().splitlines() or [done.reason or ""])[-1]
    return (
        f"bubblewrap cannot make a sandbox here ({said}); let unprivileged users make user "
        "namespaces (on Ubuntu: sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
    )


def shares_root() -> bool:
    """Whether a Step's shared_root is used here: when steps run as a user of their own,
    who cannot add, move or replace what onwatch's folders hold. As onwatch's own user
    they could (a link where the next workspace will be made), so each is bound alone."""
    return os.geteuid() == 0


def network_isolated() -> bool:
    """Whether steps have a network of their own, this machine's loopback out of reach
    (slirp4netns is installed), or share the machine's."""
    return slirp.missing() is None


def network_guarded() -> bool:
    """Whether steps are also kept off this machine's other addresses and link-local ones
    (netguard.py: onwatch runs as root)."""
    return network_isolated() and netguard.applies()


@cache
def memory_enforced_by() -> str:
    """What holds a step to its memory limit here: "cgroup" (all its processes together,
    enforced by the kernel) or "rlimit" (each process alone, and their sum watched)."""
    group = cgroups.create(Limits().memory_bytes, Limits().processes)
    group.remove()
    return "cgroup" if "memory" in group.dirs else "rlimit"


def run(
    step: Step, on_output: Callable[[bytes], None], cancelled: threading.Event | None = None
) -> Outcome:
    """Run one step; on_output gets its stdout and stderr, merged, as they come."""
    with made(step) as launch:
        return launch.watch(on_output, cancelled or threading.Event())


@contextmanager
def made(step: Step) -> Iterator[_Launch]:
    """The step's sandbox, set up with its command held back until watch() lets it start;
    on leaving, whatever of it is left is killed and waited for."""
    with phases.timed("sandbox: checks"):
        if missing := _missing():
            raise SandboxError(missing)
        _refuse_exposing(step)
        user = _step_user(step.user) if os.geteuid() == 0 else None
    if user is not None and not step.handed_over:
        with phases.timed("sandbox: checks"):
            _check_reachable_folders(step, user)
    with phases.timed("sandbox: cgroup made"):
        group = cgroups.create(step.limits.memory_bytes, step.limits.processes)
    try:
        with _Launch(step, user, group) as launch:
            yield launch
    finally:
        with phases.timed("sandbox: cgroup removed"):
            group.remove()


class Ahead:
    """A step's sandbox made while the step before it runs: its cgroup (moving a process
    into one waits for the kernel's RCU, some 10 ms), namespaces, mounts and network cost
    a step tens of milliseconds, which then overlap the step before (the first step's
    overlap the walk that hands its workspace and caches over). Its command starts only
    when start() is called; leaving it as a context (or close()) stops whatever is left."""

    def __init__(self, step: Step) -> None:
        """Its processes are started here, in the caller's thread: bubblewrap dies with
        the thread that started it (--die-with-parent), and this one runs the step.
        Waiting for them to set up and giving them their network happens in a thread of
        its own."""
        self.step = step
        self.stack = ExitStack()
        self.launch: _Launch | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._prepare,),
            name="sandbox-ahead",
            daemon=True,
        )
        try:
            self.launch = self.stack.enter_context(made(step))
        except BaseException as e:  # raised where the step runs, as if made there
            self.error = e
            return
        self.thread.start()

    def _prepare(self) -> None:
        assert self.launch is not None
        try:
            with phases.overlapped():
                self.launch.prepare()
        except BaseException as e:
            self.error = e

    def wait(self) -> None:
        """Until it is ready to start (its network is up), or failed."""
        if self.thread.is_alive():
            with phases.timed("sandbox: made ahead, waited for"):
                self.thread.join()

    def start(self, argv: Sequence[str] = LATER) -> None:
        """Let its command start (raises what making it raised): follow() then follows it.
        argv: the command, for a step made without it (LATER)."""
        if self.launch is not None and self.error is None:
            self.launch.hand_over()  # while its thread waits for the sandbox
        self.wait()
        if self.error is not None:
            raise self.error
        assert self.launch is not None
        self.launch.start(argv)

    def follow(self, on_output: Callable[[bytes], None], cancelled: threading.Event) -> Outcome:
        """Until its command has ended and nothing of it is left."""
        try:
            self.start()
            assert self.launch is not None
            return self.launch.watch(on_output, cancelled)
        finally:
            self.close()

    def close(self) -> None:
        if self.thread.is_alive():
            self.thread.join()
        self.stack.close()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Network:
    """A network of its own (slirp.py, netguard.py) made once for the steps of a pipeline,
    which each join it (Step.network) rather than have one made for each: slirp4netns and
    the routes cost a step some 40 ms of processes, on a machine whose cores its command
    needs. What the steps share is only this: their other namespaces, /tmp included, are
    each its own, and nothing of a step outlives it to meet the next one there.

    It lives in a holder, bubblewrap with only user and network namespaces of its own and
    nothing but `cat` in it, run as the step user and ended by close() (or with the thread
    that made it). A step's sandbox enters its network namespace with nsenter before
    bubblewrap runs; where onwatch is not root, its user namespace too (only there may
    onwatch's user enter the other), with its own user kept. Either way the step's own user
    namespace is not the one that owns the network, so it can change neither its routes
    nor its addresses."""

    def __init__(self, user: str = "") -> None:
        """Its holder starts here (in the thread that runs the steps: bubblewrap dies with
        the thread that started it); ready() gives it its network."""
        with phases.timed("network: holder started"):
            self.user = _step_user(user) if os.geteuid() == 0 else None
            self.lock = threading.RLock()
            self.child_pid = 0
            self.fds: list[int] = []
            self.slirp: slirp.Network | None = None
            self.error: SandboxError | None = None
            self.made = False
            self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self._start()

    def _start(self) -> None:
        hold_r, self.hold_w = os.pipe()
        self.info_r, info_w = os.pipe()
        argv = ["bwrap", "--unshare-user", "--unshare-net", "--die-with-parent"]
        argv += ["--info-fd", str(info_w), *_system_mounts(), "--", "cat"]
        if self.user is not None:
            argv = ["setpriv", *_drop(*self.user), "--", *argv]
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=hold_r,
                stdout=self.output,
                stderr=self.output,
                env=LAUNCH_ENV,
                pass_fds=(info_w,),
                start_new_session=True,
            )
        except BaseException:
            os.close(self.hold_w)
            os.close(self.info_r)
            raise
        finally:
            os.close(hold_r)
            os.close(info_w)

    def join(self) -> tuple[list[str], list[int]]:
        """The command line that enters it (nsenter, up to "--"), and the descriptors that
        command line names, to be passed on."""
        with self.lock:
            self._named()
            net, *user = self.fds[1:]
        argv = ["nsenter", f"--net=/proc/self/fd/{net}"]
        if user:
            argv += [f"--user=/proc/self/fd/{user[0]}", "--preserve-credentials"]
        return [*argv, "--"], [net, *user]

    def _named(self) -> None:
        """Until the holder named its namespaces' process; then they are held open here,
        whatever becomes of it."""
        if self.error is not None:
            raise self.error
        if self.child_pid:
            return
        deadline, info = time.monotonic() + slirp.READY_SECONDS, b""
        while time.monotonic() < deadline:
            if not select.select([self.info_r], [], [], POLL_MS / 1000)[0]:
                continue
            if not (chunk := os.read(self.info_r, 65536)):
                self._failed("its holder ended before it was set up")
            info += chunk
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._hold(int(json.loads(info)["child-pid"]))
                return
        self._failed(f"its holder named no process within {slirp.READY_SECONDS} s")

    def _hold(self, pid: int) -> None:
        self.fds.append(os.pidfd_open(pid))
        self.fds.append(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY))
        if self.user is None:
            self.fds.append(os.open(f"/proc/{pid}/ns/user", os.O_RDONLY))
        self.child_pid = pid

    def ready(self) -> None:
        """Until it has its network (once; the steps after wait for nothing)."""
        with self.lock:
            if self.made:
                return
            self._named()
            with phases.timed("network: made"):
                self._connect()
            self.made = True

    def _connect(self) -> None:
        done = _set_itself_up(self.child_pid, time.monotonic() + slirp.READY_SECONDS)
        if not done:
            self._failed("its holder was not set up in time" if done is None else "")
        try:
            self.slirp = slirp.Network(self.child_pid, self.user)
            netguard.apply(self.child_pid)
        except (slirp.NetworkError, netguard.GuardError) as e:
            self.error = SandboxError(str(e))
            raise self.error from None
        except OSError as e:  # its holder ended meanwhile: its /proc entries are gone
            self._failed(e.strerror or "")

    def _failed(self, what: str) -> NoReturn:
        self.output.seek(0)
        said = self.output.read().decode(errors="replace").strip().splitlines()
        cause = said[-1] if said else what or "it ended"
        self.error = SandboxError(
            f"the steps' network could not be made ({cause}); the machine may be "
            "overloaded, run it again"
        )
        raise self.error

    def close(self) -> None:
        """Ends its holder and slirp4netns; what is left of the namespace goes with the
        last step's."""
        with self.lock:
            if self.slirp is not None:
                self.slirp.stop()
                self.slirp = None
            if self.hold_w < 0:
                return
            os.close(self.hold_w)  # `cat` ends
            self.hold_w = -1
            try:
                self._stop()
            finally:
                for fd in [self.info_r, *self.fds]:
                    os.close(fd)
                self.fds = []
                self.output.close()

    def _stop(self) -> None:
        """Its `cat` is killed (should it not end by itself) and reaped by bubblewrap, which
        then ends; killed itself only if it does not (its `cat` would be left unreaped)."""
        if self.fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.fds[0], signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_SECONDS)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        raise SandboxError(f"the steps' network did not stop within {STOP_SECONDS} s")

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_step_user(name: str = "") -> list[str]:
    """What a command line outside the sandbox (a release's web process) is prefixed with
    to run as the step user (`name`, else the shared one): setpriv, which drops root and
    every capability and then runs the command in its own place (signals reach it
    directly). Nothing when onwatch runs as its own user, which the command then runs as."""
    if os.geteuid() != 0:
        return []
    uid, gid = _step_user(name)
    return ["setpriv", *_drop(uid, gid), "--"]


def _drop(uid: int, gid: int) -> list[str]:
    return [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all"]


def _step_user(own: str = "") -> tuple[int, int]:
    name = own or env("ONWATCH_STEP_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if own:
            gone = f"the service's user {own} is gone; run again to remake it"
            raise SandboxError(gone) from None
        raise SandboxError(
            f"ONWATCH_STEP_USER={name} is not a user on this machine; create it "
            "(adduser --system onwatch-steps) or name another unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise SandboxError(f"ONWATCH_STEP_USER={name} is root; name an unprivileged user")
    return entry.pw_uid, entry.pw_gid


def _secrets() -> list[Path]:
    return [Path(settings.DATA_DIR), Path(settings.KEY_FILE), Path(settings.AUDIT_HEAD_FILE)]


def _writable(step: Step) -> dict[str, Path]:
    return {"workspace": step.workspace, **{f"cache {k}": v for k, v in step.caches.items()}}


def out_of_reach(what: str, path: Path) -> str | None:
    """Why the step user could not pass through the folder `path` (workspaces or caches
    would sit in it), in one line; None when it can, or when steps run as onwatch's user."""
    if os.geteuid() != 0:
        return None
    try:
        uid, gid = _step_user()
        _check_reachable(what, path, uid, gid, itself=True)
    except SandboxError as e:
        return str(e)
    return None


def _refuse_exposing(step: Step) -> None:
    """A workspace or cache that holds onwatch's data, its keys or the system would hand
    them to the step (writable, and when root, owned)."""
    shown = {**_writable(step), **{f"tool folder {p}": p for p in step.readonly}}
    if (root := step.shared_root) is not None:
        if any(path == root or not _under(path, root) for path in _writable(step).values()):
            raise SandboxError(f"the step's workspace and caches must be inside {root}")
        shown["shared folder"] = root
    # A folder inside the data directory is fine: only that folder is mounted.
    hidden = [(s.resolve(), False) for s in _secrets()]
    hidden += [(Path(d).resolve(), True) for d in (*SYSTEM_DIRS, "/etc")]
    for what, path in shown.items():
        if not path.is_absolute() or not path.is_dir():
            raise SandboxError(f"the step's {what} {path} is not an existing absolute folder")
        real = path.resolve()
        for other, nor_inside in hidden:
            if _under(other, real) or (nor_inside and _under(real, other)):
                raise SandboxError(
                    f"the step's {what} {path} would expose {other}, which steps must not "
                    "change or see; give it a folder of its own"
                )


def _under(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or inside it, both absolute. By their parts, as strings:
    `folder in path.parents` makes a Path of each parent, and each step's checks took 13 ms
    of the worker's processor that way (on a machine whose cores the steps need)."""
    inside, outer = os.fspath(path), os.fspath(folder).rstrip("/") + "/"
    return inside == os.fspath(folder) or inside.startswith(outer)


def _check_reachable_folders(step: Step, user: tuple[int, int]) -> None:
    """The step user must be able to reach the workspace and caches: bubblewrap runs as
    that user and opens them by path (they are handed over only when the step starts)."""
    for what, path in _writable(step).items():
        _check_reachable(what, path.resolve(), *user)


def _hand_over(step: Step, user: tuple[int, int]) -> None:
    """Make the workspace, and all it holds, the step user's: just before its command
    starts, not when its sandbox is made (the checkout may still be writing there, as
    root, and no process of that user must be able to change the folder meanwhile). A
    file with other links stays as it is: the checkout hard-linked git's objects from
    onwatch's own copy of the repository (git.clone_local), which the step may read but
    must not change (the user's own the folders, so it may still remove them)."""
    _hand_over_paths([step.workspace], *user, linked=False)


def _hand_over_caches(step: Step, user: tuple[int, int]) -> None:
    """The caches and all they hold (thousands of files): while the sandbox sets itself
    up. Nothing but the service's steps writes there, one pipeline at a time (the caller
    holds them), and none runs until the step starts."""
    _hand_over_paths(list(step.caches.values()), *user)


def _hand_over_paths(paths: list[Path], uid: int, gid: int, linked: bool = True) -> None:
    """linked: files with other links too (uv's cache links its files into virtualenvs)."""
    for path in paths:
        os.chown(path, uid, gid, follow_symlinks=False)
        # fwalk with dir_fd: a step of another run sharing the cache cannot swap a folder
        # for a symlink mid-walk and have root chown what it points to.
        for _root, dirs, files, root_fd in os.fwalk(path, follow_symlinks=False):
            for name in dirs:
                _chown(name, root_fd, uid, gid)
            for name in files:
                _chown(name, root_fd, uid, gid, linked)


def _chown(name: str, dir_fd: int, uid: int, gid: int, linked: bool = True) -> None:
    """Only what is not the step user's yet: a chown that changes nothing still writes the
    inode, and the caches (hundreds of files) are handed over again at every step."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not linked and st.st_nlink > 1:
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if not stat.S_ISREG(st.st_mode) or (st.st_mode & stat.S_IROTH and not writable):
            return  # left as it is: the step may read it, never change it
        # Else a copy of its own: git in the step could not read it, or the step could
        # write through it into what it is linked to (onwatch's copy of the repository).
        # Safe as done once, before any step ran: no step has planted links of its own yet.
        _copied_in_place(name, dir_fd)
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    elif (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _copied_in_place(name: str, dir_fd: int) -> None:
    """A linked file others may not read (written under a closed umask) made a file of its
    own, which can then be handed over: the one it is linked to is left as it was."""
    temporary = f".{name}.onwatch"
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        copy = os.open(temporary, flags, 0o444, dir_fd=dir_fd)
        try:
            while chunk := os.read(source, 1 << 20):
                os.write(copy, chunk)
        finally:
            os.close(copy)
    finally:
        os.close(source)
    os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _check_reachable(what: str, path: Path, uid: int, gid: int, itself: bool = False) -> None:
    for parent in [path, *path.parents] if itself else path.parents:
        st = parent.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            raise SandboxError(
                f"the step's {what} {path} is out of the step user's reach: {parent} is "
                f"closed to other users; keep workspaces and caches under a folder others "
                f"may pass through (chmod o+x {parent}), or run onwatch as its own user"
            )


def _system_mounts() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def _etc_copies(step: Step) -> dict[str, int]:
    """What the step reads of /etc's files, as of now, one memfd each (the caller closes
    them); a folder of ETC_FILES is bound as it is (_mounts). A live bind of a file fails
    the step when the file is replaced meanwhile (useradd writes /etc/passwd anew: bwrap
    then finds "/etc/passwd (deleted)"), and onwatch adds service users as steps start."""
    copies: dict[str, int] = {}
    try:
        for name in ETC_FILES:
            if name == "/etc/resolv.conf" and _own_network(step):
                copies[name] = _memfd(name, slirp.RESOLV_CONF)  # its own network's DNS
                continue
            try:
                with open(name, "rb") as f:  # a folder raises IsADirectoryError
                    copies[name] = _memfd(name, f.read())
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue
    except BaseException:
        for fd in copies.values():
            os.close(fd)
        raise
    return copies


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _mounts(step: Step, copies: Mapping[str, int]) -> list[str]:
    args = _system_mounts()
    for f in ETC_FILES:
        if f in copies:
            args += ["--perms", "0444", "--ro-bind-data", str(copies[f]), f]
        elif os.path.isdir(f):
            args += ["--ro-bind-try", f, f]
    if step.host_network:
        # A database on this machine is often reached through its socket file, not a port.
        for folder in DATABASE_SOCKETS:
            args += ["--ro-bind-try", folder, folder]
    size = str(step.limits.memory_bytes)
    args += ["--proc", "/proc", "--dev", "/dev"]
    # tmpfs is memory: sized so a step cannot fill it past its memory limit.
    for tmp in ("/tmp", "/var/tmp"):  # noqa: S108 (the sandbox's own, fresh and private)
        args += ["--size", size, "--tmpfs", tmp]
    args += _writable_mounts(step)
    for path in step.readonly:
        args += ["--ro-bind", str(path), str(path)]
    # The sandbox's own root (where bwrap made /etc and the mount points) read-only too.
    return [*args, "--remount-ro", "/"]


def _writable_mounts(step: Step) -> list[str]:
    wanted = list(_writable(step).values())
    if step.shared_root is None or not shares_root():
        return [arg for path in wanted for arg in ("--bind", str(path), str(path))]
    root = step.shared_root
    args = ["--bind", str(root), str(root)]
    for other in _others_in(root, wanted):
        args += ["--tmpfs", str(other), "--remount-ro", str(other)]
    return args


def _others_in(root: Path, wanted: list[Path]) -> list[Path]:
    """What the shared root holds besides the wanted folders: the entries of it and of its
    folders on the way to them that are neither wanted nor on the way (other pipelines'
    workspaces)."""
    on_the_way = {p for path in wanted for p in path.parents if _under(p, root)}
    others = []
    for folder in on_the_way:
        for entry in os.scandir(folder):
            path = Path(entry.path)
            if path in wanted or path in on_the_way:
                continue
            if not entry.is_dir(follow_symlinks=False):
                # A mount over a link would land where it leads; onwatch makes only folders.
                raise SandboxError(f"{path} is not a folder of onwatch's; remove it")
            others.append(path)
    return others


def _own_network(step: Step) -> bool:
    """Whether the step has a network apart from the machine's (its own, or one it joins)."""
    return network_isolated() and not step.host_network


def _joins(step: Step) -> bool:
    return _own_network(step) and step.network is not None


def _bwrap_args(step: Step, info_fd: int, block_fd: int, copies: Mapping[str, int]) -> list[str]:
    """block_fd: the pipe the step waits on until it may start (its network is up, its
    turn has come); copies: the files of /etc it reads (_etc_copies)."""
    args = ["--unshare-all", "--unshare-user", "--disable-userns"]
    args += ["--die-with-parent", "--new-session", "--hostname", "step"]
    args += ["--info-fd", str(info_fd), "--block-fd", str(block_fd)]
    if not _own_network(step) or _joins(step):
        args.append("--share-net")  # the machine's, or the one it joined (Network)
    args += [*_mounts(step, copies), "--chdir", str(step.workspace)]
    args += ["--clearenv"]
    for key, value in step.env.items():
        args += ["--setenv", key, value]
    return args


def _later(fd: int) -> list[str]:
    """The command of a step whose argv comes later: bash waits for it on fd (NUL
    separated), then becomes it, fd closed."""
    return ["bash", "-c", f'mapfile -d "" -u {fd} argv; exec {fd}<&-; exec "${{argv[@]}}"']


def _outer_argv(
    step: Step,
    user: tuple[int, int] | None,
    group: cgroups.Group,
    fd: int,
    later: int | None,
    join: Sequence[str] = (),
) -> list[str]:
    """sh joins the step's cgroups (as root, before anything of the step exists), prlimit
    sets the rlimits, nsenter joins a network made for several steps (join: its command
    line, Network.join), setpriv drops root, then bwrap reads its arguments from fd;
    later: where the command comes from when it is not known yet."""
    # The command stays on the command line: bwrap takes only options from --args.
    command = _later(later) if later is not None else step.argv
    argv = ["bwrap", "--args", str(fd), "--", *command]
    if user is not None:
        argv = ["setpriv", *_drop(*user), "--", *argv]
    argv = ["prlimit", *_rlimits(step.limits, group), "--", *join, *argv]
    if files := group.procs_files():
        # The file names ride as arguments, up to "--"; what follows is the command.
        join = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'
        argv = ["sh", "-c", join, "sh", *map(str, files), "--", *argv]
    return argv


def _rlimits(limits: Limits, group: cgroups.Group) -> list[str]:
    # No core files: a crashing test would write its memory into the workspace.
    args = ["--core=0"]
    if "memory" not in group.dirs:
        # RLIMIT_DATA, not RLIMIT_AS: Go, Node and the JVM reserve far more address space
        # than they use and fail under an address-space limit; DATA counts what is written.
        args.append(f"--data={limits.memory_bytes}")
    if "pids" not in group.dirs:
        # RLIMIT_NPROC counts every process of the user on the machine (bwrap outside the
        # sandbox, onwatch itself when steps run as its user, other steps), so the step
        # would be refused short of its limit, unseen. The watch over its pid namespace
        # stops it at the limit; the rlimit is the backstop should that be too slow.
        args.append(f"--nproc={limits.processes + NPROC_HEADROOM}")
    return args


class _Launch:
    """One running step: the outer process, its output pipe and the sandbox's pid 1."""

    def __init__(self, step: Step, user: tuple[int, int] | None, group: cgroups.Group) -> None:
        self.step, self.user, self.group = step, user, group
        self.started = time.monotonic()
        self.output_bytes = 0
        self.output_lines = 0
        self.info = b""
        self.sandbox_pidfd: int | None = None
        self.child_pid = 0
        self.pid_ns = 0
        self.network: slirp.Network | None = None
        self.block_w: int | None = None
        self.prepared = False
        self.handed_over = False
        self.later_w: int | None = None  # where a command given later is written

    def __enter__(self) -> _Launch:
        with phases.timed("sandbox: bwrap started"):
            return self._start()

    def _start(self) -> _Launch:
        out_r, out_w = os.pipe()
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        self.block_w = block_w
        args_fd = os.memfd_create("bwrap-args")
        passed = [out_w, info_w, args_fd, block_r]
        try:  # out of descriptors, say: none of them is left open
            copies = _etc_copies(self.step)
        except BaseException:
            for made in (*passed, out_r, info_r, block_w):
                os.close(made)
            raise
        passed += copies.values()
        later_r = None
        if self.step.argv == LATER:
            later_r, self.later_w = os.pipe()
            passed.append(later_r)
        try:
            # The joined network's descriptors stay open: they are its, not this step's.
            network = self.step.network if _joins(self.step) else None
            join, joined_fds = network.join() if network is not None else ([], [])
            args = _bwrap_args(self.step, info_w, block_r, copies)
            os.write(args_fd, b"".join(a.encode() + b"\0" for a in args))
            os.lseek(args_fd, 0, os.SEEK_SET)
            self.proc = subprocess.Popen(
                _outer_argv(self.step, self.user, self.group, args_fd, later_r, join),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                env=LAUNCH_ENV,
                pass_fds=[*passed[1:], *joined_fds],
                start_new_session=True,
            )
        except BaseException:
            for fd in (out_r, info_r, self.block_w, self.later_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        self.out_r, self.info_r = out_r, info_r
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with phases.timed("sandbox: stopped"):
                self._stop()
        finally:
            for fd in (self.out_r, self.info_r, self.sandbox_pidfd, self.block_w, self.later_w):
                if fd is not None:
                    os.close(fd)

    def prepare(self) -> None:
        """Everything up to the command's start but its workspace's hand-over: its
        network, where it has its own, and the caches."""
        if self.prepared:
            return
        if _joins(self.step):
            assert self.step.network is not None
            self.step.network.ready()
        elif _own_network(self.step):
            self._connect()
        if self._hands_over():
            assert self.user is not None
            with phases.timed("sandbox: caches handed to the step user"):
                _hand_over_caches(self.step, self.user)
        self.prepared = True

    def _hands_over(self) -> bool:
        return self.user is not None and not self.step.handed_over

    def hand_over(self) -> None:
        """What the workspace holds, made the step user's (once) before its command
        starts."""
        if self._hands_over() and not self.handed_over:
            assert self.user is not None
            with phases.timed("sandbox: hand over to the step user"):
                _hand_over(self.step, self.user)
        self.handed_over = True

    def start(self, argv: Sequence[str] = LATER) -> None:
        """Let the command start (once), its network up and its folders handed over; argv:
        the command, for a step made without it."""
        if self.block_w is None:
            return
        if (self.later_w is None) != (argv == LATER):
            raise ValueError("a step's command is given once: when it is made, or when it starts")
        self.prepare()
        self.hand_over()
        if self.later_w is not None:
            _write_argv(self.later_w, argv)
            os.close(self.later_w)
            self.later_w = None
        self._let_start()
        # Its limits count from here: it may have been made ahead, while another step ran.
        self.started = time.monotonic()

    def watch(self, on_output: Callable[[bytes], None], cancelled: threading.Event) -> Outcome:
        self.start()
        with phases.timed("command"):
            reason = self._pump(on_output, cancelled)
        if reason is None and self.info == b"":
            reason = "the sandbox could not start (its message is in the output)"
        # The kernel may have killed a process for memory while the step went on.
        reason = reason or self._limit_hit()
        code = None if reason else self.proc.wait()
        if code:
            reason = f"exited with {code}"
        return Outcome(code, reason, time.monotonic() - self.started, self.output_bytes)

    def _pump(self, on_output: Callable[[bytes], None], cancelled: threading.Event) -> str | None:
        """Pass output on until the step ends (None) or must be stopped (why)."""
        poller = select.poll()
        poller.register(self.out_r, select.POLLIN)
        poller.register(self.info_r, select.POLLIN)
        open_fds = {self.out_r, self.info_r}
        deadline, next_check = self.started + self.step.limits.seconds, 0.0
        while open_fds or self.proc.poll() is None:
            # Not on every chunk: a step printing fast would have us read sysfs 10,000
            # times a second.
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + POLL_MS / 1000
                if reason := self._limit_hit() or self._time_or_cancel(deadline, cancelled):
                    return reason
            if not open_fds:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(POLL_MS / 1000)
                continue
            for fd, _event in poller.poll(POLL_MS):
                chunk = os.read(fd, 65536)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd == self.info_r:
                    self._sandbox_info(chunk)
                elif reason := self._output(chunk, on_output):
                    return reason
        return None

    def _connect(self) -> None:
        """Give the sandbox its network before the step may start: bwrap holds it back
        (--block-fd), so its first connection already has somewhere to go."""
        with phases.timed("sandbox: set up by bwrap"):
            ready = self._wait_set_up()
        if ready:
            with phases.timed("sandbox: network"):
                self._network()

    def _wait_set_up(self) -> bool:
        deadline = time.monotonic() + slirp.READY_SECONDS
        while self.sandbox_pidfd is None and time.monotonic() < deadline:
            if not select.select([self.info_r], [], [], POLL_MS / 1000)[0]:
                continue
            if not (chunk := os.read(self.info_r, 65536)):
                return False  # bwrap ended before its sandbox was set up: its output says why
            self._sandbox_info(chunk)
        if self.sandbox_pidfd is None:
            self._late(f"named no process within {slirp.READY_SECONDS} s")
            return False
        return self._set_up(deadline)

    def _network(self) -> None:
        try:
            self.network = slirp.Network(self.child_pid, self.user)
            netguard.apply(self.child_pid)
        except (slirp.NetworkError, netguard.GuardError) as e:
            raise SandboxError(str(e)) from None

    def _let_start(self) -> None:
        if self.block_w is None:
            return
        # A sandbox that failed to set itself up is gone already: its output says why.
        with contextlib.suppress(BrokenPipeError):
            os.write(self.block_w, b"1")
        os.close(self.block_w)
        self.block_w = None

    def _set_up(self, deadline: float) -> bool:
        """Whether the sandbox's pid 1 finished setting itself up, its own loopback
        included: it names itself before that, and slirp4netns bringing the loopback up
        meanwhile would make bubblewrap's setup of it fail. Its last act before it waits
        for us is to drop its capabilities, which /proc shows anyone."""
        done = _set_itself_up(self.child_pid, deadline)
        if done is None:
            self._late(f"was not set up within {slirp.READY_SECONDS} s")
        return bool(done)

    def _late(self, what: str) -> None:
        """A sandbox still starting this late would wait for its network for ever."""
        if self.proc.poll() is None:
            raise SandboxError(f"the sandbox {what}; the machine may be overloaded, run it again")

    def _time_or_cancel(self, deadline: float, cancelled: threading.Event) -> str | None:
        if cancelled.is_set():
            return "cancelled"
        if time.monotonic() >= deadline:
            return f"stopped after {_duration(self.step.limits.seconds)}, the step's time limit"
        return None

    def _limit_hit(self) -> str | None:
        limits, group = self.step.limits, self.group
        # Without a cgroup, the rlimits refuse memory and processes but nothing tells
        # whether they did: the step's pid namespace shows how far it got. (Its processes
        # together, too: RLIMIT_DATA bounds each one alone.)
        tree = pidns.members(self.pid_ns) if self.pid_ns and len(group.dirs) < 2 else []
        at_most = "pids" not in group.dirs and len(tree) >= limits.processes
        if group.forks_refused() or at_most:
            return f"started more than {limits.processes} processes, the step's limit"
        over = "memory" not in group.dirs and pidns.private_bytes(tree) > limits.memory_bytes
        if group.oom_kills() or over:
            return f"used more than {size(limits.memory_bytes)} of memory, the step's limit"
        return None

    def _output(self, chunk: bytes, on_output: Callable[[bytes], None]) -> str | None:
        """Counted before it is passed on, and only what fits the limits is: a step that
        floods its output is stopped at once, not after its flood is stored."""
        limits = self.step.limits
        room = limits.output_bytes - self.output_bytes
        self.output_bytes += len(chunk)
        kept, over_lines = _first_lines(
            chunk[: max(room, 0)], limits.output_lines - self.output_lines
        )
        self.output_lines += kept.count(b"\n")
        if kept:
            on_output(kept)
        if self.output_bytes > limits.output_bytes:
            return f"printed more than {size(limits.output_bytes)}, the step's limit"
        if over_lines:
            return f"printed more than {limits.output_lines:,} lines, the step's limit"
        return None

    def _sandbox_info(self, chunk: bytes) -> None:
        """bwrap names the sandbox's pid 1 once it is set up: killing it kills the rest."""
        self.info += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError, ProcessLookupError):
            info = json.loads(self.info)
            self.pid_ns = int(info["pid-namespace"])
            self.child_pid = int(info["child-pid"])
            self.sandbox_pidfd = os.pidfd_open(self.child_pid)

    def _stop(self) -> None:
        """Kill whatever is left, and wait until it is gone."""
        if self.sandbox_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.sandbox_pidfd, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._drain_info()
        if self.network is not None:
            self.network.stop()
        pidfd = self.sandbox_pidfd
        # Readable once pid 1 has exited, which it does after the kernel killed and
        # reaped every other process of its pid namespace.
        gone = pidfd is None or bool(select.select([pidfd], [], [], STOP_SECONDS)[0])
        if not (self.group.kill(STOP_SECONDS) and gone):
            raise SandboxError(
                f"processes of the step did not stop within {STOP_SECONDS} s of being "
                "killed; they may be stuck on a hung disk or network mount"
            )

    def _drain_info(self) -> None:
        """The pid 1 of a step stopped before its info was read (cancelled at once)."""
        if self.sandbox_pidfd is not None:
            return
        # Everything that held its other end is dead by now, so the end comes at once.
        while select.select([self.info_r], [], [], 5)[0]:
            if not (chunk := os.read(self.info_r, 65536)):
                break
            self._sandbox_info(chunk)
        if self.sandbox_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.sandbox_pidfd, signal.SIGKILL)


def _set_itself_up(pid: int, deadline: float) -> bool | None:
    """Whether bubblewrap's pid `pid` finished setting up its namespaces (its last act is
    to drop its capabilities, which /proc shows anyone): False when it ended (its output
    says why), None when the deadline came first."""
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        try:
            caps = [ln for ln in status.read_text().splitlines() if ln.startswith("CapEff:")]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if caps and int(caps[0].split()[1], 16) == 0:
            return True
        # Each step waits here: a coarser poll costs every step its granularity.
        time.sleep(0.001)
    return None


def _write_argv(fd: int, argv: Sequence[str]) -> None:
    """NUL-separated; more than a pipe holds would block until bash reads it, which it
    does only once it is let start: a command that long is refused."""
    data = b"".join(a.encode() + b"\0" for a in argv)
    if len(data) > LATER_BYTES:
        raise SandboxError("the step's command is longer than 32 KiB; put it in a script")
    # A sandbox that failed to set itself up is gone already: its output says why.
    with contextlib.suppress(BrokenPipeError):
        os.write(fd, data)


def _first_lines(chunk: bytes, room: int) -> tuple[bytes, bool]:
    """The chunk up to its `room`th line end, and whether it had more lines than that."""
    if chunk.count(b"\n") <= room:
        return chunk, False
    lines = chunk.split(b"\n", room)
    return b"".join(line + b"\n" for line in lines[:room]), True


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:.3g} min"


def size(n: int) -> str:
    for unit, name in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if n >= unit:
            value = n / unit
            return f"{value:g} {name}" if value == int(value) else f"{value:.1f} {name}"
    return f"{n} bytes"
