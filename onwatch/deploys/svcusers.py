"""Each service's own user on this machine (useradd and userdel: the only module that runs
them). When onwatch runs as root, a service's pipeline steps, build, release command and
web process run as a system user of its own (ONWATCH_SERVICE_USER_PREFIX and its id,
`onwatch-svc-7`), so one service cannot read another's release folders or, through
/proc, the environment (the secrets) of another's processes. Where onwatch runs as its own
user it cannot make users: every service then runs as that user (applies() says which).

A deleted service's user is removed with it, after its processes were stopped and its
folders removed: it then owns nothing, and an account left behind under a service's name
would be taken over by a later service of the same id (a new database)."""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess

from django.conf import settings

log = logging.getLogger("onwatch.svcusers")

LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# What useradd takes on every distribution (NAME_REGEX of Debian's adduser is stricter).
NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


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
    if _uid(name) is None:
        _add(name, service_id)
    if _uid(name) == 0:
        raise UserError(f"the user {name} is root; remove it, onwatch makes its own")
    return name


def _add(name: str, service_id: int) -> None:
    argv = ["useradd", "--system", "--user-group", "--no-create-home"]
    argv += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
    argv += ["--comment", f"onwatch service {service_id}", name]
    done = subprocess.run(argv, capture_output=True, text=True, env=LAUNCH_ENV)
    # Another worker may have made it meanwhile: that one is as good.
    if done.returncode != 0 and _uid(name) is None:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(
            f"onwatch could not create the user {name} for the service's processes "
            f"({said[-1] if said else f'useradd exited with {done.returncode}'}); "
            "free the name or make room for system users, then run again"
        )


def remove(service_id: int) -> None:
    """Remove the deleted service's user; one that cannot be removed (a process of it
    still runs) is left as it is, a system user nobody can sign in as, and logged."""
    name = name_of(service_id)
    if not applies() or _uid(name) is None:
        return
    done = subprocess.run(["userdel", name], capture_output=True, text=True, env=LAUNCH_ENV)
    if done.returncode != 0:
        log.warning("could not remove the user %s: %s", name, done.stderr.strip())


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
