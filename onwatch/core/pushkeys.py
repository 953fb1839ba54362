"""The authorized_keys file of the user onwatch runs as: one line per person's SSH key,
each allowed to run only `onwatch git-serve <key id>` (a `git push` to onwatch), so the
real OpenSSH server does the signing in and onwatch never listens for SSH itself.

Only the block between the two marker lines is onwatch's: whatever else the file holds
(an administrator's own keys) is kept as it is. The file is replaced in one step, so sshd
never reads half of it.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from onwatch.core.models import SshKey

BEGIN = "# onwatch: keys for git push (written by onwatch; add your own lines outside this block)"
END = "# onwatch: end"
# What a git-serve started by sshd needs to find onwatch's database and key file: sshd
# gives it a bare environment.
PASSED_ON = ("DATABASE_URL", "SECRET_KEY", "XDG_DATA_HOME", "PATH", "LANG")
# Read once by `onwatch createowner`: nothing git-serve needs, so never kept in a file.
KEPT_OUT = ("ONWATCH_OWNER_PASSWORD",)


class KeyFileError(Exception):
    """The authorized_keys file could not be written; the message says what to do."""


def remote(service: str = "SERVICE") -> str:
    """The address people give `git remote add onwatch`: the user onwatch runs as (whose
    authorized_keys this is) on the host people reach onwatch at."""
    return f"{getpass.getuser()}@{settings.SITE.host}:{service}"


def env_file() -> Path:
    return settings.DATA_DIR / "git-serve.env"


def serve_command(key_id: int) -> str:
    argv = [sys.executable, "-m", "onwatch", "git-serve", "--env-file", str(env_file())]
    return shlex.join([*argv, str(key_id)])


def key_line(key: SshKey) -> str:
    # sshd reads the option's value up to an unescaped double quote.
    command = serve_command(key.pk).replace("\\", "\\\\").replace('"', '\\"')
    return f'restrict,command="{command}" {key.public_key} onwatch-key-{key.pk}'


def merged(current: str, keys: Iterable[SshKey]) -> str:
    """`current` with onwatch's block (re)written at its place, or at the end."""
    lines = current.splitlines()
    if BEGIN in lines and END not in lines[lines.index(BEGIN) :]:
        raise KeyFileError(
            f"{settings.AUTHORIZED_KEYS} has onwatch's first marker line but not its last "
            f"({END!r}); put it back after onwatch's lines, or remove both"
        )
    block = [BEGIN, *(key_line(k) for k in keys), END]
    if BEGIN in lines:
        start = lines.index(BEGIN)
        stop = lines.index(END, start)
        lines[start : stop + 1] = block
    else:
        lines += block
    return "\n".join(lines) + "\n"


def write_env_file() -> None:
    """The settings the web, worker and CLI run with, for git-serve (0600: they may hold
    the database's password)."""
    passed = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith("ONWATCH_") or k in PASSED_ON) and k not in KEPT_OUT
    }
    passed |= {f"{k}_FILE": os.environ[f"{k}_FILE"] for k in PASSED_ON if f"{k}_FILE" in os.environ}
    passed["ONWATCH_DATA_DIR"] = str(settings.DATA_DIR)
    atomic_write(env_file(), json.dumps(passed, indent=1, sort_keys=True) + "\n")


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync() -> None:
    """Write every person's keys into the file, as the database has them now. Under a
    lock, and read inside it, so two processes changing keys at once both end written."""
    path: Path = settings.AUTHORIZED_KEYS
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (settings.DATA_DIR / "authorized_keys.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_env_file()
            current = path.read_text() if path.exists() else ""
            atomic_write(path, merged(current, SshKey.objects.order_by("id")))
    except OSError as e:
        raise KeyFileError(
            f"onwatch could not write {path} ({e.strerror or e}); check that the user onwatch "
            "runs as owns it, or set ONWATCH_AUTHORIZED_KEYS"
        ) from None
