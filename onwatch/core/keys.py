"""Binding the key file to the database: create it on first run, refuse a wrong or missing
one before anything is written, and rotate keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from onwatch.core import keyring
from onwatch.core.fields import encrypted_fields
from onwatch.core.keyring import Keyring, KeyringError
from onwatch.core.models import AuditEntry, KeyCheck

CANARY = "onwatch key check"

# Secrets kept outside EncryptedTextField (allauth's MFA rows, say) join a rotation through
# a hook. The hook runs before the new key exists and reads every value it owns, raising
# if one cannot be decrypted; it returns a writer that rotate() calls inside its
# transaction once the new key is current, and that answers how many values it rewrote.
ReencryptWriter = Callable[[], int]
ReencryptHook = Callable[[], ReencryptWriter]
_reencrypt_hooks: list[ReencryptHook] = []


def register_reencrypt(hook: ReencryptHook) -> None:
    if hook not in _reencrypt_hooks:
        _reencrypt_hooks.append(hook)


def database_has_secrets() -> bool:
    if KeyCheck.objects.exists():
        return True
    for f in encrypted_fields():
        if f.model._default_manager.exclude(**{f.name: ""}).exclude(**{f.name: None}).exists():
            return True
    return False


def _missing(path: Path) -> KeyringError:
    return KeyringError(
        f"The key file {path} is missing, but this database holds secrets encrypted "
        "with it; restore the key file (onwatch will not make a new one over them)"
    )


def verify_before_migrating() -> None:
    """Prove an existing database's key file before migrations change anything in it.

    Only the key check row is read: other tables may not match the models until the
    migrations have run. A database without that row is new; ensure_keyring() takes it
    from there once the tables exist.
    """
    if KeyCheck._meta.db_table not in connection.introspection.table_names():
        return
    if not KeyCheck.objects.exists():
        return
    path = Path(settings.KEY_FILE)
    if not keyring.key_file_exists(path):
        raise _missing(path)
    keyring.forget_keyring()
    # Reading the value decrypts it: a wrong key file raises KeyringError right here.
    if KeyCheck.objects.values_list("value", flat=True).first() != CANARY:
        raise KeyringError(f"The key file {path} does not match this database")


def ensure_keyring() -> Keyring:
    """Load the key file and prove it fits this database; create both on a fresh install."""
    path = Path(settings.KEY_FILE)
    if not keyring.key_file_exists(path):
        if database_has_secrets():
            raise _missing(path)
        # A log already there is from before the key: marked once `migrate` has sealed it.
        Keyring.create(path, audit_keyed=not AuditEntry.objects.exists())
    keyring.forget_keyring()
    ring = keyring.get_keyring()
    check = KeyCheck.objects.first()
    if check is None:
        KeyCheck.objects.create(value=CANARY, key_id=ring.current)
    else:
        # Reading the row decrypts it: a wrong key file raises KeyringError right here.
        if check.value != CANARY:
            raise KeyringError(f"The key file {path} does not match this database")
    return ring


@dataclass
class Rotation:
    old_key: int
    new_key: int
    values: int


def rotate() -> Rotation:
    """Add a key, make it current and re-encrypt every secret under it.

    The key file keeps the old keys (so a restored older backup still opens) and is
    written before the database changes: if re-encryption fails, both keys are there and
    every value stays readable.
    """
    ring = ensure_keyring()
    old = ring.current
    fields = encrypted_fields()
    # Decrypt everything first: a value that cannot be read stops the rotation unchanged.
    plain: list[tuple[type, str, object, str]] = []
    for f in fields:
        model = f.model
        for pk, value in model._default_manager.values_list("pk", f.name):
            if value not in (None, ""):
                plain.append((model, f.name, pk, value))
    writers = [hook() for hook in _reencrypt_hooks]
    new = ring.add_key()
    ring.save()
    with transaction.atomic():
        for model, name, pk, value in plain:
            model._default_manager.filter(pk=pk).update(**{name: value})
        values = len(plain) + sum(write() for write in writers)
        KeyCheck.objects.all().delete()
        KeyCheck.objects.create(value=CANARY, key_id=new, updated_at=timezone.now())
    return Rotation(old, new, values)


__all__ = [
    "KeyringError",
    "Rotation",
    "database_has_secrets",
    "ensure_keyring",
    "register_reencrypt",
    "rotate",
    "verify_before_migrating",
]
