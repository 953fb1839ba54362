"""OpenSSH for the whole project: key pairs onwatch makes, a server's host keys fetched
once with ssh-keyscan and pinned, and the ssh command lines that use them. Backups reach
SFTP repositories through it (restic runs the command line as its sftp.command); deploys
reach hosts the same way. Nothing here knows about backups: callers pass plain data."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from onwatch.config import env

KEYSCAN_SECONDS = 15


class SshError(Exception):
    """ssh could not be used as asked; the message says what to do."""


class HostKeysUnavailable(SshError):
    """The server could not be asked for its host keys."""


@dataclass(frozen=True)
class Endpoint:
    """Where ssh connects: a host, an optional port (22 when None) and login user."""

    host: str
    port: int | None = None
    user: str = ""

    def __str__(self) -> str:
        return f"{self.host}:{self.port or 22}"


_SAFE_HOST = re.compile(r"[A-Za-z0-9_.\[\]:%-]+")
_SAFE_USER = re.compile(r"[A-Za-z0-9_.@+-]*")


def endpoint(host: str, port: int | None = None, user: str = "") -> Endpoint:
    """An Endpoint, or ValueError for a host or user that ssh could read as an option."""
    if host.startswith("-") or not _SAFE_HOST.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name")
    if user.startswith("-") or not _SAFE_USER.fullmatch(user):
        raise ValueError(f"{user!r} is not a user name")
    return Endpoint(host, port, user)


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: str  # OpenSSH format, unencrypted: callers store it encrypted
    public: str  # one authorized_keys line


def new_key_pair(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    # One line: a newline in the comment would split the authorized_keys entry.
    return KeyPair(private, f"{public.decode()} {' '.join(comment.split())}".strip())


# Key types OpenSSH accepts for signing in; DSA is gone from OpenSSH, small RSA is weak.
PUBLIC_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class PublicKey:
    kind: str
    blob: str  # base64, as in an authorized_keys line
    comment: str

    @property
    def line(self) -> str:
        return f"{self.kind} {self.blob}"

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    """One public key as `ssh-keygen` writes it ("type base64 comment"), checked so that
    sshd will take it; SshError with one line saying what is wrong. Options before the
    type ("command=…") are refused: onwatch writes a key's options itself."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise SshError("give exactly one public key, the one line of your .pub file")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or parts[0] not in PUBLIC_KEY_TYPES:
        raise SshError(
            "that is not an SSH public key: paste the line of your ~/.ssh/id_ed25519.pub "
            "(it starts with ssh-ed25519, ecdsa-sha2-… or ssh-rsa), never the private key"
        )
    key = PublicKey(parts[0], parts[1], " ".join(parts[2:]).strip())
    _check_blob(key)
    return key


def _check_blob(key: PublicKey) -> None:
    try:
        blob = base64.b64decode(key.blob, validate=True)
        inner_len = int.from_bytes(blob[:4], "big")
        inner = blob[4 : 4 + inner_len].decode()
    except ValueError:
        raise SshError("the public key is damaged (its base64 part does not decode)") from None
    if inner != key.kind:
        raise SshError(f"the public key is damaged (it says {key.kind} but holds another type)")
    if key.kind.startswith("sk-"):
        return  # security-key types: cryptography cannot load them; sshd checks them
    try:
        loaded = serialization.load_ssh_public_key(key.line.encode())
    except (ValueError, TypeError):
        raise SshError("the public key is damaged: it does not hold a valid key") from None
    bits = getattr(loaded, "key_size", None)
    if key.kind == "ssh-rsa" and bits is not None and bits < MIN_RSA_BITS:
        raise SshError(
            f"an RSA key of {bits} bits is too weak; make an ed25519 key (ssh-keygen -t ed25519)"
        )


# --- host keys ---------------------------------------------------------------------------


def keyscan() -> str:
    return env("ONWATCH_SSH_KEYSCAN", "ssh-keyscan")


def scan_host_keys(host: str, port: int | None = None, what: str = "SSH server") -> str:
    """The server's host key lines, in known_hosts format ("[host]:port type key").
    `what` names the server in errors ("SFTP server", "host")."""
    args = [keyscan(), "-T", str(KEYSCAN_SECONDS)]
    if port:
        args += ["-p", str(port)]
    where = f"the {what} {host}:{port or 22}"
    try:
        done = subprocess.run(
            [*args, "--", host],
            capture_output=True,
            text=True,
            timeout=KEYSCAN_SECONDS + 15,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise HostKeysUnavailable(
            "ssh-keyscan is not installed; install the OpenSSH client (apt install openssh-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise HostKeysUnavailable(
            f"{where} gave no answer within {KEYSCAN_SECONDS} s; check the address, the port "
            "and the firewall"
        ) from None
    return _host_key_lines(done, where)


def _host_key_lines(done: subprocess.CompletedProcess[str], where: str) -> str:
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        said = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("#")]
        why = f" ({said[-1].strip()[:200]})" if said else ""
        raise HostKeysUnavailable(
            f"{where} did not show its host key{why}; check the address, the port and that "
            "sshd runs there"
        )
    return "\n".join(sorted(lines)) + "\n"


def fingerprints(known_hosts: str) -> list[str]:
    """ "ssh-ed25519 SHA256:…" for each pinned key, as `ssh-keygen -lf` shows them, for
    people to compare with what the server's administrator reads on the server."""
    found = []
    for line in known_hosts.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.startswith("#"):
            continue
        blob = base64.b64decode(parts[2])
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        found.append(f"{parts[1]} SHA256:{digest}")
    return found


# --- command lines -----------------------------------------------------------------------


def locked_down_args(
    where: Endpoint, key: Path, known_hosts: Path, log: Path, *remote: str, subsystem: bool = False
) -> list[str]:
    """ssh with this key and the pinned host keys only, never asking anything, logging to
    `log`; `remote` is the command (or with subsystem=True, the subsystem, e.g. "sftp")."""
    return locked_down_options(key, known_hosts, log) + _destination(where, remote, subsystem)


def locked_down_options(key: Path, known_hosts: Path, log: Path) -> list[str]:
    """ssh and the options of locked_down_args, without a destination: for programs that
    add the host and command themselves (git's GIT_SSH_COMMAND)."""
    return [
        "ssh",
        "-F",
        "/dev/null",  # no user or system ssh_config can loosen what follows
        "-E",
        str(log),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
    ]


def _destination(where: Endpoint, remote: tuple[str, ...], subsystem: bool) -> list[str]:
    args = ["-p", str(where.port)] if where.port else []
    args += ["-l", where.user] if where.user else []
    return [*args, *(["-s"] if subsystem else []), "--", where.host, *remote]


def by_hand_command(
    where: Endpoint, key_file: str, known_hosts_file: str | None, *remote: str, subsystem: bool
) -> str:
    """The short ssh command line a person runs on a fresh machine (a recovery kit), with
    the key and host key files saved beside it; the host key is checked when one is given."""
    args = ["ssh", "-i", key_file, "-o", "IdentitiesOnly=yes"]
    if known_hosts_file:
        args += ["-o", f"UserKnownHostsFile={known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
    args += ["-p", str(where.port)] if where.port else []
    args += ["-l", where.user] if where.user else []
    return " ".join([*args, *(["-s"] if subsystem else []), where.host, *remote])


def split_safe_join(args: list[str], through: str) -> str:
    """One string that a shell-like splitter (restic's sftp.command, named by `through`)
    turns back into `args`. ValueError for an argument such a splitter cannot get back."""
    return " ".join(_quote(a, through) for a in args)


def _quote(arg: str, through: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./\[\]-]+", arg):
        return arg
    if "'" in arg:
        raise ValueError(f"cannot pass {arg!r} to ssh through {through}; use another path")
    return f"'{arg}'"


class Session:
    """One private temporary directory (0700) holding a private key, the pinned host keys
    and ssh's log, for the ssh processes of one call; close() removes it, key and all.
    ssh logs to a file because the program running it may exit before passing ssh's own
    error on."""

    def __init__(self, private_key: str, known_hosts: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="onwatch-ssh-"))
        try:
            fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(private_key.strip() + "\n")
            self.known_hosts.write_text(known_hosts.strip() + "\n" if known_hosts.strip() else "")
        except BaseException:
            self.close()
            raise

    @property
    def key(self) -> Path:
        return self.dir / "key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def log(self) -> Path:
        return self.dir / "ssh.log"

    def args(self, where: Endpoint, *remote: str, subsystem: bool = False) -> list[str]:
        return locked_down_args(
            where, self.key, self.known_hosts, self.log, *remote, subsystem=subsystem
        )

    def git_command(self) -> str:
        """GIT_SSH_COMMAND for git to reach a repository with this key and the pinned host
        keys only (git runs it through a shell and adds the host and command)."""
        return shlex.join(locked_down_options(self.key, self.known_hosts, self.log))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
