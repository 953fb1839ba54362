"""SSH for SFTP repositories: the key pair onwatch makes for each repository and the
server's host keys, fetched once with ssh-keyscan and pinned. (restic.py runs ssh itself,
through restic's sftp.command.)"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from onwatch.backups.restic import RepositoryUnreachable
from onwatch.config import env

KEYSCAN_SECONDS = 15


class HostKeysUnavailable(RepositoryUnreachable):
    """The SFTP server could not be asked for its host keys."""


@dataclass(frozen=True)
class KeyPair:
    private: str  # OpenSSH format, unencrypted: it is stored encrypted by onwatch
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


def keyscan() -> str:
    return env("ONWATCH_SSH_KEYSCAN", "ssh-keyscan")


def scan_host_keys(host: str, port: int | None = None) -> str:
    """The server's host key lines, in known_hosts format ("[host]:port type key")."""
    args = [keyscan(), "-T", str(KEYSCAN_SECONDS)]
    if port:
        args += ["-p", str(port)]
    where = f"{host}:{port or 22}"
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
            f"the SFTP server {where} gave no answer within {KEYSCAN_SECONDS} s; check the "
            "address, the port and the firewall"
        ) from None
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        said = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("#")]
        why = f" ({said[-1].strip()[:200]})" if said else ""
        raise HostKeysUnavailable(
            f"the SFTP server {where} did not show its host key{why}; check the address, the "
            "port and that sshd runs there"
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
