"""Encryption at rest: versioned AES-256-GCM keys in a key file outside the database.

The key file is JSON, mode 0600: {"format": 1, "current": 2, "keys": {"1": "<b64>", ...},
"audit_keyed": true}. The last is a one-way marker that the audit log is sealed with these
keys: kept here, outside the database, so a database writer cannot pass entries off as
ones from before the key (see onwatch.core.audit).
A secret is stored as ``ow1:<key id>:<base64(nonce || ciphertext+tag)>``; the column it
belongs to is bound in as associated data, so a ciphertext copied into another column
does not decrypt.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "ow1"


class KeyringError(Exception):
    """The key file is missing, unreadable or does not fit this database. For people."""


class UnmarkedKeyFile(KeyringError):
    """The key file could not take the note that the audit log is keyed; `why` in words."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass
class Keyring:
    path: Path
    keys: dict[int, bytes] = field(default_factory=dict)
    current: int = 0
    audit_keyed: bool = False

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyringError(
                f"The key file {path} is missing; restore it from your safe copy "
                "or set ONWATCH_KEY_FILE to where it is"
            ) from None
        except OSError as e:
            raise unreadable(path, e) from None
        try:
            # Bytes in: a file that is not UTF-8 is as damaged as one that is not JSON.
            doc = json.loads(raw)
            keys = {int(k): base64.b64decode(v, validate=True) for k, v in doc["keys"].items()}
            current = int(doc["current"])
            audit_keyed = doc.get("audit_keyed") is True
        except (ValueError, KeyError, TypeError, AttributeError):  # UnicodeError is a ValueError
            raise KeyringError(
                f"The key file {path} is damaged (not onwatch key-file JSON); "
                "restore it from your safe copy"
            ) from None
        if current not in keys or any(len(k) != 32 for k in keys.values()):
            raise KeyringError(f"The key file {path} is damaged (bad key); restore it")
        return cls(path, keys, current, audit_keyed)

    @classmethod
    def create(cls, path: Path, audit_keyed: bool = True) -> Keyring:
        """A new key file; marked keyed unless an audit log from before the key awaits sealing."""
        ring = cls(path, audit_keyed=audit_keyed)
        ring.add_key()
        try:
            ring.save(exclusive=True)
        except FileExistsError:
            raise  # never a reason to replace keys: the caller decides what that means
        except OSError as e:
            raise KeyringError(
                f"The key file {path} cannot be written ({e.strerror}); set ONWATCH_KEY_FILE "
                "to a file in a folder onwatch can write, or fix that folder's permissions"
            ) from None
        return ring

    def add_key(self) -> int:
        new_id = max(self.keys, default=0) + 1
        self.keys[new_id] = AESGCM.generate_key(bit_length=256)
        self.current = new_id
        return new_id

    def save(self, exclusive: bool = False) -> None:
        """Write atomically with mode 0600: a crash leaves the old file or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": 1,
            "current": self.current,
            "keys": {str(k): base64.b64encode(v).decode() for k, v in self.keys.items()},
            "audit_keyed": self.audit_keyed,
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keyring-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                # link() fails if the file appeared meanwhile: never overwrite a key file.
                os.link(tmp, self.path)
            else:
                os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.keys[self.current]).encrypt(
            nonce, plaintext.encode(), context.encode()
        )
        return f"{PREFIX}:{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        try:
            prefix, key_id_s, payload = token.split(":", 2)
            key_id = int(key_id_s)
            blob = base64.b64decode(payload, validate=True)
        except ValueError:
            raise KeyringError(f"A stored secret in {context} is not in onwatch's format") from None
        if prefix != PREFIX:
            raise KeyringError(f"A stored secret in {context} is not in onwatch's format")
        key = self.keys.get(key_id)
        if key is None:
            raise KeyringError(
                f"The key file {self.path} lacks key {key_id}, which encrypted secrets in this "
                "database; restore the key file that belongs to this database"
            )
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], context.encode()).decode()
        except InvalidTag:
            raise KeyringError(
                f"The key file {self.path} does not match this database (key {key_id} cannot "
                "decrypt its secrets); restore the key file that belongs to this database"
            ) from None

    def key_id_of(self, token: str) -> int | None:
        parts = token.split(":", 2)
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def unreadable(path: Path, e: OSError) -> KeyringError:
    return KeyringError(
        f"The key file {path} cannot be read ({e.strerror}); let the user running onwatch "
        "read it and open the folders above it, or set ONWATCH_KEY_FILE to where it is"
    )


def key_file_exists(path: Path) -> bool:
    """Path.exists() raises on a folder onwatch may not open: that is a key file it cannot
    read, not one that is missing (which would make a new one), so say which."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise unreadable(path, e) from None
    return True


_ring: Keyring | None = None


def get_keyring() -> Keyring:
    """The process-wide keyring, loaded from settings.KEY_FILE on first use."""
    global _ring
    from django.conf import settings

    path = Path(settings.KEY_FILE)
    if _ring is None or _ring.path != path:
        _ring = Keyring.load(path)
    return _ring


def mark_audit_keyed() -> None:
    """Note in the key file, for good, that the audit log is sealed with its keys.

    Read afresh and written whole, so a key added meanwhile by another process is kept.
    """
    from django.conf import settings

    path = Path(settings.KEY_FILE)
    ring = Keyring.load(path)
    if ring.audit_keyed:
        return
    ring.audit_keyed = True
    try:
        ring.save()
    except OSError as e:
        # Written whole through a new file in its folder: the folder must take new files.
        why = f"its folder {path.parent} does not let onwatch write there ({e.strerror})"
        raise UnmarkedKeyFile(
            f"The key file {path} cannot be written ({e.strerror}); onwatch must note in it, "
            "once, that the audit log is now sealed with its keys: let it write the file for "
            "one `onwatch migrate`",
            why,
        ) from None
    forget_keyring()


def forget_keyring() -> None:
    global _ring
    _ring = None
    # Documents decrypted under the old key file must be proved against the new one.
    from onwatch.core.fields import forget_opened

    forget_opened()
