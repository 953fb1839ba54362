"""Binding the key file to the database: create it on first run, refuse a wrong or missing
one before anything is written, and rotate keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from onwatch.core import keyring
from onwatch.core.fields import encrypted_fields
from onwatch.core.keyring import Keyring, KeyringError
from onwatch.core.models import KeyCheck

CANARY = "onwatch key check"


def database_has_secrets() -> bool:
    if KeyCheck.objects.exists():
        return True
    for f in encrypted_fields():
        if f.model._default_manager.exclude(**{f.name: ""}).exclude(**{f.name: None}).exists():
            return True
    return False


def ensure_keyring() -> Keyring:
    """Load the key file and prove it fits this database; create both on a fresh install."""
    path = Path(settings.KEY_FILE)
    if not path.exists():
        if database_has_secrets():
            raise KeyringError(
                f"The key file {path} is missing, but this database holds secrets encrypted "
                "with it; restore the key file (onwatch will not make a new one over them)"
            )
        Keyring.create(path)
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
    new = ring.add_key()
    ring.save()
    with transaction.atomic():
        for model, name, pk, value in plain:
            model._default_manager.filter(pk=pk).update(**{name: value})
        KeyCheck.objects.all().delete()
        KeyCheck.objects.create(value=CANARY, key_id=new, updated_at=timezone.now())
    return Rotation(old, new, len(plain))


__all__ = ["KeyringError", "Rotation", "database_has_secrets", "ensure_keyring", "rotate"]
