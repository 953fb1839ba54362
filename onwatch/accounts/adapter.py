from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from django.http import HttpRequest

from onwatch.core.keyring import get_keyring

# The keyring binds each ciphertext to a context; every MFA secret shares this one.
MFA_CONTEXT = "mfa.authenticator"
# The kinds of second factor that let an account in; recovery codes only back them up.
SECOND_FACTORS = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Accounts come only from one-time invite links (accounts/views.py).
        return False


class MFAAdapter(DefaultMFAAdapter):  # type: ignore[misc]
    def encrypt(self, text: str) -> str:
        # allauth stores TOTP secrets and recovery-code seeds in the clear by default;
        # a copy of the database alone must not let anyone pass the second factor.
        return get_keyring().encrypt(text, MFA_CONTEXT)

    def decrypt(self, encrypted_text: str) -> str:
        return get_keyring().decrypt(encrypted_text, MFA_CONTEXT)

    def can_delete_authenticator(self, authenticator: Authenticator) -> bool:
        # MFA is for everyone: the last second factor cannot be removed, only replaced.
        if authenticator.type not in SECOND_FACTORS:
            return True
        others = Authenticator.objects.filter(
            user_id=authenticator.user_id, type__in=SECOND_FACTORS
        ).exclude(pk=authenticator.pk)
        return bool(others.exists())
