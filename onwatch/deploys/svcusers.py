"""Each service's own user on this machine (useradd and usermod: the only module that runs
them). When onwatch runs as root, a service's pipeline steps, build, release command and
web process run as a system user of its own (ONWATCH_SERVICE_USER_PREFIX and its id,
`onwatch-svc-7`), so one service cannot read another's release folders or, through
/proc, the environment (the secrets) of another's processes. Where onwatch runs as its own
user it cannot make users: every service then runs as that user (applies() says which).

A deleted service's user is kept as a locked tombstone (remove), after its processes were
stopped and its folders removed. Its uid is never handed out again: useradd alone gives the
highest free one, the one just freed, and the new account (a later service's, or one a
package makes with `useradd --system`) would own what the old one left where onwatch does
not look (/tmp, caches, a workspace left behind). The tombstone holds the uid in
/etc/passwd itself, which outlives a wiped or restored data directory; onwatch also keeps
every uid it gave in the data directory (USED_FILE) and names the next one. It is renamed:
an account left under a service's name would be taken over by a later service of the same
id (a new database)"""

from __future__ import annotations

import fcntl
import grp
import logging
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

log = logging.getLogger("onwatch.svcusers")

LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# What useradd takes on every distribution (NAME_REGEX of Debian's adduser is stricter).
NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Every uid onwatch gave a service's user on this machine, one a line (in the data dir).
USED_FILE = "service-uids"
# useradd's exit code when the uid is in use, and how many free uids are tried before
# onwatch gives up.
USERADD_UID_IN_USE = 4
ADD_TRIES = 5
LOGIN_DEFS = Path("/etc/login.defs")
# useradd's own range for system users when login.defs does not set one.
SYS_UIDS = (100, 999)
# The comment of a deleted service's user, kept locked so that its uid is never reused.
TOMBSTONE = "deleted onwatch service"


class UserError(Exception):
    """The service's user could not be made; the message says what to do."""


def applies() -> bool:
    """Whether services run as users of their own here: onwatch runs as root and the
    machine has useradd."""
    return os.geteuid() == 0 and shutil.which("useradd", path=LAUNCH_ENV["PATH"]) is not None


def name_of(service_id: int) -> str:
    return f"{settings.SERVICE_USER_PREFIX}{service_id}"


def ensure(service_id: int) -> str:
    """The user the service's processes run as, made now when missing; "" where services
    share one user (the step user as root, else onwatch's own)."""
    if not applies():
        return ""
    name = name_of(service_id)
    if not NAME.fullmatch(name):
        raise UserError(
            f"{name} cannot be a user name; set ONWATCH_SERVICE_USER_PREFIX to lower-case "
            "letters, digits and '-' (the default is onwatch-svc-)"
        )
    with _uids_held() as used:
        if _buried_here(name) and (why := _bury(name, _uid(name) or 0)):
            raise UserError(
                f"the user {name} belonged to a deleted service and could not be renamed "
                f"({why}); stop its processes (pkill -u {name}) and run again"
            )
        tried: set[int] = set()
        # The lock is this data directory's: another onwatch on the machine (or a package's
        # useradd) may take the chosen uid meanwhile; then the next free one.
        while _uid(name) is None and len(tried) < ADD_TRIES:
            chosen = _unused_uid(used | tried)
            if not _add(name, service_id, chosen, last=len(tried) == ADD_TRIES - 1):
                tried.add(chosen)
        uid = _uid(name)
        if uid is not None and uid not in used:
            _remember(uid)  # made by an older onwatch, or just now
    if uid == 0:
        raise UserError(f"the user {name} is root; remove it, onwatch makes its own")
    return name


def _add(name: str, service_id: int, uid: int, last: bool) -> bool:
    """Make the user with `uid`; False when that uid was taken since it was chosen and
    `last` is not set, for another try."""
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--uid", str(uid)]
    argv += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
    argv += ["--comment", f"onwatch service {service_id}", name]
    done = subprocess.run(argv, capture_output=True, text=True, env=LAUNCH_ENV)
    if done.returncode == USERADD_UID_IN_USE and not last and _uid(name) is None:
        return False
    # Another worker may have made it meanwhile: that one is as good.
    if done.returncode != 0 and _uid(name) is None:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(
            f"onwatch could not create the user {name} for the service's processes "
            f"({said[-1] if said else f'useradd exited with {done.returncode}'}); "
            "free the name or make room for system users, then run again"
        )
    return True


def _used_file() -> Path:
    return Path(settings.DATA_DIR) / USED_FILE


@contextmanager
def _uids_held() -> Iterator[set[int]]:
    """The uids given so far, while no other onwatch process of this data directory
    chooses or records one."""
    path = _used_file()
    try:
        held = path.open("a+")
    except OSError as e:
        raise UserError(
            f"onwatch could not open {path}, where it keeps the ids given to services' users "
            f"({e.strerror or e}); make the data directory writable for it"
        ) from None
    with held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.seek(0)
        yield {int(line) for line in held.read().split() if line.isdigit()}


def _remember(uid: int) -> None:
    with _used_file().open("a") as out:
        out.write(f"{uid}\n")
        out.flush()
        os.fsync(out.fileno())


def _unused_uid(used: set[int]) -> int:
    """The highest system uid (as useradd would choose) that no user or group has now and
    no service of this onwatch ever had."""
    low, high = _system_range()
    for uid in range(high, low - 1, -1):
        if uid not in used and not _taken(uid):
            return uid
    # Said, as they are never freed: the range fills over the years of a busy machine.
    held = len(used.union(_tombstones()).intersection(range(low, high + 1)))
    kept = f", {held} of them kept for deleted services so that no new account owns what they left"
    raise UserError(
        f"onwatch cannot make a user for the service: every system user id ({low} to "
        f"{high}) is taken{kept if held else ''}; widen SYS_UID_MIN/SYS_UID_MAX in "
        "/etc/login.defs"
    )


def _tombstones() -> set[int]:
    return {u.pw_uid for u in pwd.getpwall() if u.pw_gecos.startswith(TOMBSTONE)}


def _taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        try:
            grp.getgrgid(uid)  # its group gets the same id
        except KeyError:
            return False
    return True


def _system_range() -> tuple[int, int]:
    found = dict(zip(("SYS_UID_MIN", "SYS_UID_MAX"), SYS_UIDS, strict=True))
    try:
        lines = LOGIN_DEFS.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0] in found and words[1].isdigit():
            found[words[0]] = int(words[1])
    return found["SYS_UID_MIN"], found["SYS_UID_MAX"]


def remove(service_id: int) -> None:
    """Keep the deleted service's user as a tombstone: locked, expired, no login shell, in
    no group but its own, renamed so that its name is free for a later service of the same
    id. /etc/passwd then holds its uid against a package's `useradd --system`, which would
    otherwise give it to a new account owning what the service left; the data directory's
    list is the backstop. What cannot be done (a process of it still runs) is logged, and
    the renaming is done at the next ensure() of that id."""
    name = name_of(service_id)
    if not applies() or (uid := _uid(name)) is None:
        return
    with _uids_held() as used:
        if uid not in used:
            _remember(uid)
    argv = ["usermod", "--lock", "--expiredate", "1", "--shell", "/usr/sbin/nologin"]
    argv += ["--groups", "", "--comment", f"{TOMBSTONE} {service_id}", name]
    if why := _run(argv):
        log.warning("could not lock the user %s: %s", name, why)
    if why := _bury(name, uid):
        log.warning("could not rename the user %s of a deleted service: %s", name, why)


def tombstone_of(uid: int) -> str:
    return f"{settings.SERVICE_USER_PREFIX}gone-{uid}"


def _bury(name: str, uid: int) -> str:
    """Rename the user and its own group to their tombstone's name; what failed, if any."""
    gone = tombstone_of(uid)
    try:
        own = grp.getgrgid(pwd.getpwnam(name).pw_gid).gr_name == name
    except KeyError:
        own = False
    if why := _run(["usermod", "--login", gone, name]):
        return why
    return _run(["groupmod", "--new-name", gone, name]) if own else ""


def _buried_here(name: str) -> bool:
    """Whether `name` is still a deleted service's locked user: its renaming failed."""
    try:
        return pwd.getpwnam(name).pw_gecos.startswith(TOMBSTONE)
    except KeyError:
        return False


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=LAUNCH_ENV)
    if done.returncode == 0:
        return ""
    said = (done.stderr or done.stdout).strip().splitlines()
    return said[-1] if said else f"{argv[0]} exited with {done.returncode}"


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
