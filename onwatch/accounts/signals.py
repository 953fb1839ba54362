"""Sign-ins, failures and MFA changes go to the audit log."""

from __future__ import annotations

from typing import Any

from allauth.mfa import signals as mfa_signals
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from onwatch.core import audit


@receiver(user_logged_in)
def signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit.record("sign-in", request=request, actor=user.get_username(), target=user.email)


@receiver(user_logged_out)
def signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record("sign-out", request=request, actor=user.get_username(), target=user.email)


@receiver(user_login_failed)
def sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    who = str(credentials.get("email") or credentials.get("username") or "")[:200]
    audit.record("sign-in-failed", request=request, actor="anonymous", target=who)


@receiver(mfa_signals.authenticator_added)
def mfa_added(sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any) -> None:
    audit.record("mfa-added", request=request, target=user.email, kind=authenticator.type)


@receiver(mfa_signals.authenticator_removed)
def mfa_removed(
    sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any
) -> None:
    audit.record("mfa-removed", request=request, target=user.email, kind=authenticator.type)


@receiver(mfa_signals.authenticator_reset)
def mfa_reset(sender: Any, request: HttpRequest, user: Any, authenticator: Any, **kw: Any) -> None:
    audit.record("mfa-reset", request=request, target=user.email, kind=authenticator.type)
