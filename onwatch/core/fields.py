from __future__ import annotations

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
