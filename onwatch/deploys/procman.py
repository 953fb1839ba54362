"""supervisord, the one place that writes its configuration and speaks its XML-RPC interface
(over a unix socket in onwatch's data directory): the process manager that runs the
services' web processes on a machine without systemd.

supervisord runs as a daemon of its own (it forks away from whoever starts it), so the
processes it runs keep serving while onwatch stops, restarts or crashes: onwatch only
starts it when it is not running and then talks to it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onwatch.deploys.unixhttp import UnixTransport, path_problem

START_SECONDS = 15
# supervisord's own faults (supervisor/xmlrpc.py Faults).
BAD_NAME, NOT_RUNNING, ALREADY_STARTED, ALREADY_ADDED = 10, 70, 60, 90
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What the managed processes inherit from supervisord: never onwatch's own environment
# (its SECRET_KEY, DATABASE_URL), which supervisord would otherwise pass to every app.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_BYTES = "10MB"
LOG_BACKUPS = 5


class ProcmanError(Exception):
    """supervisord could not do what was asked; the message says what to do."""


@dataclass(frozen=True)
class Program:
    """A long-running process: `command` is a shell command line (so `$PORT` works), run
    in `directory` with `env` added to a clean environment."""

    name: str
    command: str
    directory: Path
    env: Mapping[str, str] = field(default_factory=dict)
    # How long a stopped process may take to finish its requests before it is killed.
    stop_seconds: int = 30
    restart_on_exit: bool = True
    # What the command runs under, e.g. setpriv dropping root to the step user: the script
    # stays root's (supervisord reads it, the secrets in it are no one else's to read).
    wrapper: Sequence[str] = ()


@dataclass(frozen=True)
class Status:
    name: str
    state: str  # supervisord's words: RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL…
    pid: int
    description: str
    exit_status: int

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


class Manager(Protocol):
    """What runs a machine's programs: supervisord here, or systemd's user manager
    (systemd.py), which systemd.manager chooses. Errors are ProcmanError."""

    root: Path

    def ensure_running(self) -> None: ...

    def answers(self) -> bool: ...

    def shutdown(self) -> None: ...

    def add(self, program: Program) -> None: ...

    def start(self, name: str) -> Status: ...

    def stop(self, name: str) -> None: ...

    def remove(self, name: str) -> None: ...

    def has(self, name: str) -> bool: ...

    def status(self, name: str) -> Status | None: ...

    def all(self) -> list[Status]: ...

    def log_of(self, name: str) -> Path: ...

    def log_tail(self, name: str, lines: int = 5) -> str: ...


def problem(program: Program) -> str | None:
    """Why `program` cannot be given to supervisord, in one line, or None."""
    if not NAME.fullmatch(program.name):
        return f"{program.name!r} is not a program name: use letters, digits, '.', '_', '-'"
    for name, value in program.env.items():
        if not ENV_NAME.fullmatch(name):
            return f"{name!r} is not an environment variable name"
        if "\x00" in value:
            return f"the value of {name} holds a NUL character, which no process can receive"
    if not program.command.strip() or "\x00" in program.command:
        return "the command is empty"
    if not program.directory.is_absolute():
        return f"the working folder {program.directory} must be an absolute path"
    return None


class Supervisor:
    """The supervisord of one onwatch data directory (`root`: its config, socket and logs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "supervisor.sock"
        self.programs_dir = root / "programs"
        self.logs_dir = root / "logs"

    # --- supervisord itself ----------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start supervisord with onwatch's configuration unless it already answers."""
        if self.answers():
            return
        if why := path_problem(str(self.socket)):
            raise ProcmanError(why)
        self._write_main_config()
        started = subprocess.run(
            [*supervisord_command(), "-c", str(self.config_file)],
            env=clean_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=START_SECONDS,
        )
        self._wait_until_up(started)

    def _wait_until_up(self, started: subprocess.CompletedProcess[str]) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.1)
        said = (started.stderr + started.stdout).strip().splitlines()
        why = said[-1] if said else f"see {self.root / 'supervisord.log'}"
        raise ProcmanError(f"supervisord did not start: {why}")

    def answers(self) -> bool:
        try:
            return bool(self._rpc().supervisor.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    def pid(self) -> int:
        return int(self._call("getPID"))

    def shutdown(self) -> None:
        """Stop supervisord and every process it runs (tests; uninstalling)."""
        pid = self.pid()
        self._call("shutdown")
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def config_file(self) -> Path:
        return self.root / "supervisord.conf"

    def _write_main_config(self) -> None:
        for folder in (self.root, self.programs_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
        lines = [
            "[unix_http_server]",
            f"file={_ini(str(self.socket))}",
            "chmod=0700",
            "[supervisord]",
            f"logfile={_ini(str(self.root / 'supervisord.log'))}",
            f"pidfile={_ini(str(self.root / 'supervisord.pid'))}",
            f"directory={_ini(str(self.root))}",
            f"childlogdir={_ini(str(self.logs_dir))}",
            "umask=077",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[include]",
            f"files={_ini(str(self.programs_dir))}/*.conf",
        ]
        write_private(self.config_file, "\n".join(lines) + "\n")

    # --- programs --------------------------------------------------------------------------

    def add(self, program: Program) -> None:
        """Give supervisord `program` (stopped); one of the same name is replaced."""
        if why := problem(program):
            raise ValueError(why)
        if self.status(program.name) is not None:
            self.remove(program.name)
        write_private(self.script_of(program.name), script(program), mode=0o700)
        write_private(self.programs_dir / f"{program.name}.conf", self._section(program))
        self._call("reloadConfig")
        try:
            self._call("addProcessGroup", program.name)
        except xmlrpc.client.Fault as e:
            if e.faultCode != ALREADY_ADDED:
                raise ProcmanError(f"supervisord refused {program.name}: {e.faultString}") from e

    def start(self, name: str) -> Status:
        """Start `name` and wait until supervisord counts it as running (it stayed up for a
        second); ProcmanError with the end of its log when it does not."""
        try:
            self._call("startProcess", name, True)
        except xmlrpc.client.Fault as e:
            if e.faultCode != ALREADY_STARTED:
                raise ProcmanError(
                    f"{name} did not start ({e.faultString}); it said: {self.log_tail(name)}"
                ) from e
        found = self.status(name)
        assert found is not None
        return found

    def stop(self, name: str) -> None:
        """Stop `name` (SIGTERM to its process group, SIGKILL after its stop_seconds)."""
        try:
            self._call("stopProcess", name, True)
        except xmlrpc.client.Fault as e:
            if e.faultCode not in (NOT_RUNNING, BAD_NAME):
                raise ProcmanError(f"could not stop {name}: {e.faultString}") from e

    def remove(self, name: str) -> None:
        """Stop `name` and forget it; its log stays."""
        self.stop(name)
        for path in (self.programs_dir / f"{name}.conf", self.script_of(name)):
            path.unlink(missing_ok=True)
        try:
            self._call("removeProcessGroup", name)
        except xmlrpc.client.Fault as e:
            if e.faultCode != BAD_NAME:
                raise ProcmanError(f"could not remove {name}: {e.faultString}") from e
        self._call("reloadConfig")

    def has(self, name: str) -> bool:
        """Whether `name` is set up here, read from the files (supervisord may be down)."""
        return (self.programs_dir / f"{name}.conf").exists()

    def status(self, name: str) -> Status | None:
        try:
            info = self._call("getProcessInfo", name)
        except xmlrpc.client.Fault as e:
            if e.faultCode == BAD_NAME:
                return None
            raise ProcmanError(f"could not ask about {name}: {e.faultString}") from e
        return _status(info)

    def all(self) -> list[Status]:
        return [_status(info) for info in self._call("getAllProcessInfo")]

    def log_of(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def script_of(self, name: str) -> Path:
        return self.programs_dir / f"{name}.sh"

    def log_tail(self, name: str, lines: int = 5) -> str:
        return tail(self.log_of(name), lines)

    def _section(self, program: Program) -> str:
        log = _ini(str(self.log_of(program.name)))
        lines = [
            f"[program:{program.name}]",
            f"command=/bin/sh {_ini(shlex.quote(str(self.script_of(program.name))))}",
            f"directory={_ini(str(program.directory))}",
            "autostart=false",
            f"autorestart={'true' if program.restart_on_exit else 'false'}",
            "startsecs=1",
            "startretries=3",
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_seconds}",
            # The web command may start children (gunicorn workers): stop them all.
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={log}",
            f"stdout_logfile_maxbytes={LOG_BYTES}",
            f"stdout_logfile_backups={LOG_BACKUPS}",
        ]
        return "\n".join(lines) + "\n"

    def _rpc(self) -> Any:
        return xmlrpc.client.ServerProxy(
            "http://localhost", transport=UnixTransport(str(self.socket))
        )

    def _call(self, method: str, *args: object) -> Any:
        try:
            return getattr(self._rpc().supervisor, method)(*args)
        except OSError as e:
            raise ProcmanError(
                f"supervisord does not answer on {self.socket} ({e.strerror or e}); "
                "start it again with onwatch"
            ) from e


def tail(path: Path, lines: int = 5) -> str:
    """The last non-blank lines of a program's log, on one line."""
    text = path.read_text(errors="replace") if path.exists() else ""
    said = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(said)[-600:] or "nothing"


def supervisord_command() -> list[str]:
    """supervisord of onwatch's own Python (a dependency), not whatever PATH finds."""
    beside = Path(sys.executable).with_name("supervisord")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "supervisor.supervisord"]


def clean_env() -> dict[str, str]:
    return {
        "PATH": BASE_PATH,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": os.environ.get("HOME", "/"),
    }


def script(program: Program) -> str:
    """The shell script supervisord runs: the program's environment, then its command.
    `exec` makes the web process supervisord's own child (dash runs a simple command of
    `sh -c` in place too), so a stop signal reaches it and not only a shell."""
    exports = [f"export {name}={shlex.quote(value)}" for name, value in program.env.items()]
    run = shlex.join([*program.wrapper, "/bin/sh", "-c", program.command])
    return "\n".join([*exports, f"exec {run}"]) + "\n"


def _ini(value: str) -> str:
    """A value for supervisord's ini file, which expands %(name)s and cannot hold lines."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} spans several lines")
    return value.replace("%", "%%")


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def _status(info: dict[str, Any]) -> Status:
    return Status(
        name=str(info["name"]),
        state=str(info["statename"]),
        pid=int(info["pid"]),
        description=str(info["description"]),
        exit_status=int(info["exitstatus"]),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
