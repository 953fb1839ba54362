"""Sign-ins, failures and MFA changes go to the audit log."""

from __future__ import annotations

import time
from typing import Any

from allauth.account.internal.flows.login import (
    get_authentication_records,
    record_authentication,
)
from allauth.mfa import signals as mfa_signals
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from onwatch.accounts.middleware import SIGNED_IN_AT, has_second_factor
from onwatch.accounts.services import record_mfa_change, record_sign_in


@receiver(user_logged_in)
def signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        # A fresh sign-in starts the absolute session lifetime again.
        request.session[SIGNED_IN_AT] = time.time()
        confirm_fresh_password(request, user)
    record_sign_in("sign-in", request, user.email, actor=user.get_username())


def confirm_fresh_password(request: HttpRequest, user: Any) -> None:
    """An account without a second factor may do nothing but enrol one, and allauth asks
    for the password again before it does. A password typed for this very sign-in is as
    fresh as that gets, so it counts as the confirmation."""
    records = get_authentication_records(request, user)
    if records and records[-1].get("method") == "password" and not has_second_factor(user.pk):
        record_authentication(request, user, method="password", reauthenticated=True)


@receiver(user_logged_out)
def signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record_sign_in("sign-out", request, user.email, actor=user.get_username())


@receiver(user_login_failed)
def sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    who = str(credentials.get("email") or credentials.get("username") or "")[:200]
    record_sign_in("sign-in-failed", request, who, actor="anonymous")


@receiver(mfa_signals.authenticator_added)
def mfa_added(sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any) -> None:
    record_mfa_change("mfa-added", request, user, authenticator.type)


@receiver(mfa_signals.authenticator_removed)
def mfa_removed(
    sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any
) -> None:
    record_mfa_change("mfa-removed", request, user, authenticator.type)


@receiver(mfa_signals.authenticator_reset)
def mfa_reset(sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any) -> None:
    record_mfa_change("mfa-reset", request, user, authenticator.type)


@receiver(mfa_signals.authentication_failed)
def mfa_failed(sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any) -> None:
    # A wrong second factor after a right password: someone may hold the password.
    record_sign_in("mfa-failed", request, user.email, actor="anonymous", kind=authenticator.type)
