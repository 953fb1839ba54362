"""Sealing audit entries so that someone who can write the database cannot rewrite them.

An entry's hash is an HMAC under a key derived from the key file, which lives outside the
database: without it no one can forge a hash that verifies. The person-identifying fields
(actor, target, IP address and each value in data) are not hashed as they are; each is
committed to with a random salt, and the HMAC covers the commitments. Erasing a person
blanks the field and drops its salt: the commitment still fits the chain, but no one (not
even with the key) can test a guessed name against it any more. The erasure itself is
marked with the key, so a database writer cannot blank out who did something either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from onwatch.core.keyring import KeyringError, get_keyring
from onwatch.core.models import AuditEntry

# Entries written before the chain was keyed: sha256 over the raw fields. `onwatch migrate`
# seals an intact run of them with the key; a broken run stays as it was, for evidence.
SCHEME_LEGACY = 1
SCHEME_KEYED = 2
ERASED = "(erased)"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


@lru_cache(maxsize=32)
def _derive(key: bytes) -> bytes:
    # A key of its own, derived rather than reused, so the audit MAC and AES-GCM never
    # share key material.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"onwatch audit").derive(key)


def audit_key(key_id: int) -> bytes:
    ring = get_keyring()
    key = ring.keys.get(key_id)
    if key is None:
        raise KeyringError(f"the key file {ring.path} lacks key {key_id}")
    return _derive(key)


def personal_fields(e: AuditEntry) -> dict[str, Any]:
    fields: dict[str, Any] = {"actor": e.actor, "target": e.target, "ip": e.ip}
    fields.update({f"data.{k}": v for k, v in (e.data or {}).items()})
    return fields


def commitment(salt: str, name: str, value: Any) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + canonical([name, value])).hexdigest()


def _mac(key_id: int, value: Any) -> str:
    return hmac.new(audit_key(key_id), canonical(value), hashlib.sha256).hexdigest()


def erasure_mark(e: AuditEntry, name: str, digest: str) -> str:
    assert e.key_id is not None
    return _mac(e.key_id, ["erased", e.seq, name, digest])


def keyed_hash(e: AuditEntry) -> str:
    assert e.key_id is not None
    digests = {name: seal["digest"] for name, seal in e.seals.items()}
    return _mac(
        e.key_id,
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "org": e.org_id,
            "action": e.action,
            "key": e.key_id,
            "prev": e.prev_hash,
            "seals": digests,
        },
    )


def seal(e: AuditEntry) -> None:
    """Commit to the entry's personal fields and hash it under the current key."""
    e.scheme = SCHEME_KEYED
    e.key_id = get_keyring().current
    seals = {}
    for name, value in personal_fields(e).items():
        salt = secrets.token_hex(16)
        seals[name] = {"salt": salt, "digest": commitment(salt, name, value)}
    e.seals = seals
    e.hash = keyed_hash(e)


def _field_problem(e: AuditEntry, name: str, value: Any) -> bool:
    s = e.seals.get(name)
    if not isinstance(s, dict) or not isinstance(s.get("digest"), str):
        return True
    if s.get("salt") is None:
        mark = erasure_mark(e, name, s["digest"])
        return value != ERASED or not hmac.compare_digest(str(s.get("erased", "")), mark)
    try:
        return not hmac.compare_digest(commitment(s["salt"], name, value), s["digest"])
    except (TypeError, ValueError):
        return True


def intact(e: AuditEntry) -> bool:
    """The keyed entry is exactly as written, apart from fields erased with the key."""
    fields = personal_fields(e)
    if e.key_id is None or not isinstance(e.seals, dict) or set(e.seals) != set(fields):
        return False
    if any(_field_problem(e, name, value) for name, value in fields.items()):
        return False
    return hmac.compare_digest(keyed_hash(e), e.hash)


def erase_field(e: AuditEntry, name: str) -> None:
    """Blank one personal field in memory; the caller writes the row."""
    digest = e.seals[name]["digest"]
    e.seals[name] = {"salt": None, "digest": digest, "erased": erasure_mark(e, name, digest)}
    if name.startswith("data."):
        e.data[name.removeprefix("data.")] = ERASED
    else:
        setattr(e, name, ERASED)
