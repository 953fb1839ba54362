"""systemd, the one place that writes unit files and runs systemctl: the process manager of
a machine where systemd runs, behind the same interface as supervisord's (procman.py).

onwatch uses the user manager of the user it runs as (`systemctl --user`), not the system
one: adding a unit needs no root, and on an SSH host the deploy user runs its own units.
The manager is systemd's, not onwatch's: the units keep serving, and are restarted on a
crash, while onwatch stops or restarts; with linger (`loginctl enable-linger`, which
hostprepare.sh asks for) it runs from boot and starts the enabled units without a login.

Each program is a unit `onwatch-<tag>-<name>.service` in the user's unit folder, where
`<tag>` stands for the onwatch root it belongs to (two roots may share one manager); its
script and log stay under that root, as supervisord's do. Logs go to files, not journald:
`log_tail` reads them the same way on both managers, and a host may run no journald."""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import time
from pathlib import Path

from onwatch.deploys import procman
from onwatch.deploys.procman import ProcmanError, Program, Status

SYSTEMCTL_SECONDS = 30
# Which manager a machine new to onwatch takes (this machine: onwatch's environment; a
# host: its deploy user's, as an ssh session gets it).
CHOICE = "ONWATCH_PROCESS_MANAGER"
CHOICES = ("auto", "supervisord", "systemd")
# How long a started unit must stay up to count as started (supervisord's startsecs).
UP_SECONDS = 1.0
# systemd's own default rate limit, said out loud: a process that dies at once is started
# 5 times in 10 s, then left failed (FATAL to the switch's gate, as supervisord's
# startretries makes it); one that crashes now and then is started again every time.
START_LIMIT = ("StartLimitIntervalSec=10", "StartLimitBurst=5")
RUNNING_STATES = ("running", "degraded")
LOG_BYTES = 10 * 1024 * 1024  # procman.LOG_BYTES and LOG_BACKUPS, in bytes
LOG_BACKUPS = procman.LOG_BACKUPS
# systemd's sign that it is PID 1 (sd_booted), and logind's record of the users who linger
# (loginctl enable-linger).
BOOTED = Path("/run/systemd/system")
LINGER = Path("/var/lib/systemd/linger")
# Exit statuses systemd gives a unit whose command it could not run (systemd.exec(5)).
EXEC_FAILED = {
    200: "its working folder could not be entered",
    203: "/bin/sh could not run its script",
    209: "its log file could not be opened",
}
FIELDS = "Id,LoadState,ActiveState,SubState,MainPID,ExecMainStatus,Result"


def manager(root: Path) -> procman.Manager:
    """The process manager of the onwatch root `root`: the one its programs were already
    given to (a machine never moves them by itself), else the one CHOICE names, else
    ("auto") systemd's user manager when it answers and outlives the user's sessions,
    else supervisord."""
    choice = os.environ.get(CHOICE) or "auto"
    if choice not in CHOICES:
        raise ProcmanError(
            f"{CHOICE}={choice!r} is not one of {', '.join(CHOICES)}: set one of those or unset it"
        )
    supervisor = procman.Supervisor(root / "supervisor")
    if supervisor.config_file.exists():
        return supervisor
    units = Systemd(root / "systemd")
    if units.root.exists() or choice == "systemd":
        return units
    if choice == "auto" and units.answers() and outlives_sessions():
        # Written down at once: a manager that answered late (or not at all) at a later
        # look must not send Caddy and a release of one machine to two managers.
        units.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return units
    return supervisor


def outlives_sessions() -> bool:
    """Whether the user manager keeps running when the user's last session ends (onwatch's
    ssh session, on a host): logind stops it then unless the user lingers. A manager that
    logind does not run (systemd is not PID 1) is its starter's, and stays."""
    return not BOOTED.is_dir() or (LINGER / _user()).exists()


class Systemd:
    """The units of one onwatch data directory (`root`: their scripts and logs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.programs_dir = root / "programs"
        self.logs_dir = root / "logs"
        self.tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]

    # --- the user manager ------------------------------------------------------------------

    def ensure_running(self) -> None:
        """The user manager is systemd's to start (at login, or at boot with linger)."""
        if not self.answers():
            raise ProcmanError(_not_answering())
        for folder in (self.root, self.programs_dir, self.logs_dir, unit_dir()):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.programs_dir, self.logs_dir):
            folder.chmod(0o700)

    def answers(self) -> bool:
        """Whether the user manager is up ("degraded": up, with a unit failed somewhere)."""
        try:
            done = _systemctl("show", "--property=SystemState", "--value")
        except ProcmanError:
            return False
        return done.returncode == 0 and done.stdout.strip() in RUNNING_STATES

    def shutdown(self) -> None:
        """Stop and remove every unit of this root (tests; uninstalling); the manager is
        the user's and keeps running."""
        for status in self.all():
            self.remove(status.name)

    # --- programs --------------------------------------------------------------------------

    def add(self, program: Program) -> None:
        """Write `program`'s unit (stopped); one of the same name is replaced."""
        if why := procman.problem(program):
            raise ValueError(why)
        if self.has(program.name):
            self.remove(program.name)
        rotate(self.log_of(program.name))
        procman.write_private(self.script_of(program.name), procman.script(program), mode=0o700)
        procman.write_private(self.unit_file(program.name), self._unit(program), mode=0o644)
        self._must("daemon-reload")

    def start(self, name: str) -> Status:
        """Enable `name` (it starts again at boot) and start it; ProcmanError with the end
        of its log when it does not stay up for UP_SECONDS."""
        self._must("enable", "--quiet", self.unit(name))
        self._must("start", self.unit(name), what=f"{name} did not start")
        first = self._running_pid(name)
        time.sleep(UP_SECONDS)
        found = self.status(name)
        if found is None or not found.running or found.pid != first:
            raise ProcmanError(f"{name} did not stay up; {self._why(name, found)}")
        return found

    def stop(self, name: str) -> None:
        """Stop `name` and keep it from starting at boot: SIGTERM to all its processes,
        SIGKILL after its stop_seconds."""
        if not self.has(name):
            return
        self._must("disable", "--quiet", self.unit(name))
        # systemctl stop waits for the unit to end: up to its TimeoutStopSec, then SIGKILL.
        waits = self._stop_seconds(name) + SYSTEMCTL_SECONDS
        self._must("stop", self.unit(name), what=f"could not stop {name}", seconds=waits)

    def _stop_seconds(self, name: str) -> int:
        """The TimeoutStopSec its unit was written with (systemd's default when unread)."""
        try:
            lines = self.unit_file(name).read_text().splitlines()
        except OSError:
            return 90
        said = [line.partition("=")[2] for line in lines if line.startswith("TimeoutStopSec=")]
        return int(said[0]) if said and said[0].isdigit() else 90

    def remove(self, name: str) -> None:
        """Stop `name` and forget it; its log stays."""
        self.stop(name)
        for path in (self.unit_file(name), self.script_of(name)):
            path.unlink(missing_ok=True)
        self._must("daemon-reload")
        _systemctl("reset-failed", self.unit(name))  # gone already when it never failed

    def has(self, name: str) -> bool:
        """Whether `name` is set up here, read from the files (the manager may be down)."""
        return self.unit_file(name).exists()

    def status(self, name: str) -> Status | None:
        if not self.has(name):
            return None
        [found] = self._show([name])
        return found

    def all(self) -> list[Status]:
        prefix = f"onwatch-{self.tag}-"
        units = sorted(unit_dir().glob(f"{prefix}*.service")) if unit_dir().is_dir() else []
        return self._show([p.name.removeprefix(prefix).removesuffix(".service") for p in units])

    def unit(self, name: str) -> str:
        return f"onwatch-{self.tag}-{name}.service"

    def unit_file(self, name: str) -> Path:
        return unit_dir() / self.unit(name)

    def log_of(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def script_of(self, name: str) -> Path:
        return self.programs_dir / f"{name}.sh"

    def log_tail(self, name: str, lines: int = 5) -> str:
        return procman.tail(self.log_of(name), lines)

    def _unit(self, program: Program) -> str:
        log = _value(f"append:{self.log_of(program.name)}")
        env = " ".join(_quoted(f"{k}={v}") for k, v in procman.clean_env().items())
        lines = [
            "[Unit]",
            _value(f"Description=onwatch {program.name} ({self.root})"),
            *START_LIMIT,
            "[Service]",
            # ExecStart alone expands $NAME: "$$" is a "$" of the path.
            f"ExecStart=/bin/sh {_quoted(str(self.script_of(program.name))).replace('$', '$$')}",
            _value(f"WorkingDirectory={program.directory}"),
            # Only these: the manager's own environment is the user's, never onwatch's.
            f"Environment={env}",
            f"Restart={'always' if program.restart_on_exit else 'no'}",
            "RestartSec=1",
            "KillSignal=SIGTERM",
            # The web command may start children (gunicorn workers): stop them all.
            "KillMode=control-group",
            f"TimeoutStopSec={program.stop_seconds}",
            "UMask=0077",
            f"StandardOutput={log}",
            f"StandardError={log}",
            "[Install]",
            "WantedBy=default.target",
        ]
        return "\n".join(lines) + "\n"

    def _running_pid(self, name: str) -> int:
        found = self.status(name)
        if found is None or not found.running:
            raise ProcmanError(f"{name} did not start; {self._why(name, found)}")
        return found.pid

    def _why(self, name: str, found: Status | None) -> str:
        """What its log said, or what systemd could not do before the command ran."""
        if found is not None and (failed := EXEC_FAILED.get(found.exit_status)):
            return f"systemd could not start it: {failed} (exit status {found.exit_status})"
        return f"it said: {self.log_tail(name)}"

    def _show(self, names: list[str]) -> list[Status]:
        if not names:
            return []
        units = [self.unit(name) for name in names]
        done = self._must("show", f"--property={FIELDS}", *units)
        blocks = [b for b in done.stdout.split("\n\n") if b.strip()]
        return [_status(name, block) for name, block in zip(names, blocks, strict=True)]

    def _must(
        self, *args: str, what: str = "", seconds: float = SYSTEMCTL_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        done = _systemctl(*args, seconds=seconds)
        if done.returncode != 0:
            said = (done.stderr + done.stdout).strip().splitlines()
            why = said[-1] if said else f"systemctl exited with {done.returncode}"
            if "Failed to connect to bus" in why:
                raise ProcmanError(_not_answering())
            raise ProcmanError(f"{what or 'systemctl ' + args[0] + ' failed'}: {why}")
        return done


def rotate(log: Path) -> None:
    """Keep a slot's log (each release started there appends to it) as supervisord keeps
    its own: past LOG_BYTES it moves to .1, .1 to .2…, the oldest of LOG_BACKUPS dropped.
    systemd appends without a limit, so a process that writes a lot between two starts
    is not cut short: it is rotated at its next start."""
    if not log.exists() or log.stat().st_size < LOG_BYTES:
        return
    for n in range(LOG_BACKUPS - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{n + 1}"))
    log.replace(log.with_name(f"{log.name}.1"))


def unit_dir() -> Path:
    """Where the user manager reads the user's own units."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def runtime_dir() -> str:
    """Where `systemctl --user` finds the manager: an ssh session without logind's PAM
    module has no XDG_RUNTIME_DIR, and systemd's default is this one."""
    return os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"


def _systemctl(*args: str, seconds: float = SYSTEMCTL_SECONDS) -> subprocess.CompletedProcess[str]:
    env = {**procman.clean_env(), "XDG_RUNTIME_DIR": runtime_dir()}
    if config := os.environ.get("XDG_CONFIG_HOME"):
        env["XDG_CONFIG_HOME"] = config
    try:
        return subprocess.run(
            ["systemctl", "--user", *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=seconds,
        )
    except subprocess.TimeoutExpired:
        said = " ".join(args[:2])
        raise ProcmanError(
            f"systemctl --user {said} still had no answer after {seconds:.0f} s: "
            "see systemctl --user status there, then try again"
        ) from None
    except OSError as e:
        why = f"systemctl --user could not be run ({e}); is systemd installed?"
        raise ProcmanError(why) from None


def _status(name: str, block: str) -> Status:
    shown = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    return Status(
        name=name,
        state=_state(shown),
        pid=int(shown.get("MainPID") or 0),
        description=f"{shown.get('ActiveState')} ({shown.get('SubState')})",
        exit_status=int(shown.get("ExecMainStatus") or 0),
    )


def _state(shown: dict[str, str]) -> str:
    """systemd's states in supervisord's words, which the switch reads."""
    active, sub = shown.get("ActiveState", ""), shown.get("SubState", "")
    if active == "active":
        return "RUNNING" if sub == "running" else "EXITED"
    if active == "activating":
        return "BACKOFF" if sub == "auto-restart" else "STARTING"
    if active == "deactivating":
        return "STOPPING"
    if active == "failed":
        return "FATAL"
    failed = shown.get("Result", "success") != "success" or shown.get("ExecMainStatus") != "0"
    return "EXITED" if failed else "STOPPED"


def _value(line: str) -> str:
    """A unit file line: systemd expands %-specifiers, and a value cannot hold lines."""
    if "\n" in line or "\r" in line:
        raise ValueError(f"{line!r} spans several lines")
    return line.replace("%", "%%")


def _quoted(word: str) -> str:
    """One word of a unit file's command line or Environment=, in double quotes."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return _value(f'"{escaped}"')


def _not_answering() -> str:
    return (
        f"systemd's user manager does not answer (systemctl --user, {runtime_dir()}); run "
        f"`loginctl enable-linger {_user()}` as root, or sign in again"
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
