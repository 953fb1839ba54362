from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allauth.core import context
from allauth.mfa.base import forms as allauth_mfa_forms
from allauth.mfa.totp import forms as allauth_totp_forms
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY
from django import forms
from django.contrib.auth import get_user_model, password_validation

from onwatch.accounts.lockout import CODE_KEY, explain, pause_of
from onwatch.accounts.services import record_pause

# allauth's error codes for a code step refused by the limit on wrong tries.
PAUSED = ("too_many_login_attempts", "rate_limited")


class AcceptInviteForm(forms.Form):
    org_name = forms.CharField(
        label="Organization name", max_length=100, required=False, help_text="Your company"
    )
    email = forms.EmailField(label="Email")
    password = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(
        label="Password again", widget=forms.PasswordInput, strip=False
    )

    def __init__(self, *args: Any, needs_org: bool, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["org_name"].required = needs_org
        if not needs_org:
            del self.fields["org_name"]

    def clean_email(self) -> str:
        email: str = self.cleaned_data["email"].strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email exists; sign in instead.")
        return email

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        pw, again = data.get("password"), data.get("password_again")
        if pw and again and pw != again:
            self.add_error("password_again", "The two passwords differ.")
        elif pw:
            user = get_user_model()(username=data.get("email", ""), email=data.get("email", ""))
            try:
                password_validation.validate_password(pw, user)
            except forms.ValidationError as e:
                self.add_error("password", e)
        return data


class ActivateTOTPForm(allauth_totp_forms.ActivateTOTPForm):  # type: ignore[misc]
    """allauth makes a new secret each time the enrolment page is shown, so a second tab
    (or any background request that lands there) silently replaced the secret behind the
    QR code already on screen, and every correct code from the app was refused. Here a
    secret, once shown, stays the one checked until enrolment succeeds (allauth then
    forgets it) or the person asks for a new one (views.new_totp_secret)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        shown = context.request.session.get(SECRET_SESSION_KEY)
        super().__init__(*args, **kwargs)
        if shown and not self.is_bound:
            self.secret = context.request.session[SECRET_SESSION_KEY] = shown

    def clean_code(self) -> str:
        return said_plainly_when_paused(self.user, super().clean_code)


def said_plainly_when_paused(user: Any, check: Callable[[], str]) -> str:
    """allauth refuses a code step after too many wrong codes with "try again later";
    say until when, and record the refused try where the account's owners see it."""
    try:
        return check()
    except forms.ValidationError as refused:
        if refused.code not in PAUSED:
            raise
        request = context.request
        pause = pause_of(request, CODE_KEY.format(pk=user.pk))
        record_pause(request, user.email, "code", pause)
        raise forms.ValidationError(explain(pause, "code"), code=refused.code) from None


class AuthenticateForm(allauth_mfa_forms.AuthenticateForm):  # type: ignore[misc]
    def clean_code(self) -> str:
        return said_plainly_when_paused(self.user, super().clean_code)


class ReauthenticateForm(allauth_mfa_forms.ReauthenticateForm):  # type: ignore[misc]
    def clean_code(self) -> str:
        return said_plainly_when_paused(self.user, super().clean_code)
