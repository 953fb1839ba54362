from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression

from onwatch.core.keyring import get_keyring


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A secret: encrypted with the current keyring key on every write, decrypted on read.

    Lookups on it cannot work (every write uses a fresh nonce); keep a separate plain
    column for anything that must be searched.
    """

    @property
    def context(self) -> str:
        return f"{self.model._meta.label_lower}.{self.name}"

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> str | None:
        if value is None or value == "":
            return value
        return get_keyring().decrypt(value, self.context)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return get_keyring().encrypt(str(value), self.context)


def encrypted_fields() -> list[EncryptedTextField]:
    from django.apps import apps

    return [
        f
        for model in apps.get_models()
        for f in model._meta.get_fields()
        if isinstance(f, EncryptedTextField)
    ]


class EncryptedJSONField(EncryptedTextField):
    """A JSON document that may hold secrets (a monitor's settings: headers, a request
    body, a password in a URL), kept whole under encryption. Rotation finds it as it finds
    every EncryptedTextField.

    A row is read far more often than it changes (the prober loads a monitor for every
    check), so each stored ciphertext is decrypted once per process: the nonce makes every
    write a new ciphertext, so a changed document is never answered from the cache.
    """

    # What django-stubs types its attribute and its create() argument by: a JSON document,
    # not the str of the TextField it is stored in.
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> Any:
        if value is None or value == "":
            return value
        return json.loads(_opened(value, self.context))

    def get_prep_value(self, value: Any) -> Any:
        # "" only comes from lookups for empty columns; a stored document never is "".
        if value is None or value == "":
            return value
        return get_keyring().encrypt(json.dumps(value), self.context)

    def to_python(self, value: Any) -> Any:
        return value

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj))


@lru_cache(maxsize=100_000)
def _opened(token: str, context: str) -> str:
    return get_keyring().decrypt(token, context)


def forget_opened() -> None:
    """Drop the decrypted documents kept in memory (after the key file changed)."""
    _opened.cache_clear()
