"""Re-encrypting allauth's MFA secrets when `onwatch keys rotate` makes a new key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allauth.mfa.adapter import get_adapter
from allauth.mfa.models import Authenticator
from django.db.models import QuerySet

# Where allauth keeps values it passed through the adapter's encrypt(): the TOTP secret,
# the recovery-code seed, and codes migrated from other packages (a list).
SECRET_KEYS = ("secret", "seed")
SECRET_LISTS = ("migrated_codes",)


def map_secrets(data: dict[str, Any], fn: Callable[[str], str]) -> tuple[dict[str, Any], int]:
    """A copy of an authenticator's data with `fn` applied to each secret, and their count."""
    out, count = dict(data), 0
    for key in SECRET_KEYS:
        if isinstance(out.get(key), str):
            out[key], count = fn(out[key]), count + 1
    for key in SECRET_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [fn(v) for v in out[key]]
            count += len(out[key])
    return out, count


def _with_secrets() -> QuerySet[Any]:
    # Passkeys hold only public keys; nothing in them is encrypted.
    found: QuerySet[Any] = Authenticator.objects.exclude(type=Authenticator.Type.WEBAUTHN)
    return found.order_by("pk")


def reencrypt_mfa_secrets() -> Callable[[], int]:
    """The keys.rotate() hook: prove every secret reads now, rewrite them under the new key
    later."""
    adapter = get_adapter()
    for data in _with_secrets().values_list("data", flat=True):
        map_secrets(data, adapter.decrypt)

    def write() -> int:
        def again(value: str) -> str:
            return str(adapter.encrypt(adapter.decrypt(value)))

        total = 0
        # Rows are re-read under lock: a recovery code used meanwhile stays used.
        for pk, data in _with_secrets().select_for_update().values_list("pk", "data"):
            new, count = map_secrets(data, again)
            Authenticator.objects.filter(pk=pk).update(data=new)
            total += count
        return total

    return write
