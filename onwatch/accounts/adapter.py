from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from django import forms
from django.http import HttpRequest

from onwatch.accounts.lockout import explain, pause_of
from onwatch.accounts.services import record_pause
from onwatch.core.keyring import get_keyring

# The keyring binds each ciphertext to a context; every MFA secret shares this one.
MFA_CONTEXT = "mfa.authenticator"
# The kinds of second factor that let an account in; recovery codes only back them up.
SECOND_FACTORS = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Accounts come only from one-time invite links (accounts/views.py).
        return False

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except forms.ValidationError as refused:
            # allauth only says "try again later"; say which limit and until when, and
            # record the refused try where the account's owners see it.
            key = self._get_login_attempts_cache_key(request, **credentials)
            pause = pause_of(request, key)
            email = str(credentials.get("email") or credentials.get("username") or "")[:200]
            record_pause(request, email, "password", pause)
            raise forms.ValidationError(explain(pause, "password"), code=refused.code) from None


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
