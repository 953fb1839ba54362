from __future__ import annotations

import time
from collections.abc import Callable

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

# Paths an account without a second factor may still reach: enrolment itself, signing out,
# and the static files those pages need.
ENROL_PATHS = ("/accounts/2fa/", "/accounts/logout/", "/static/", "/accounts/login/")


class SessionLifetimeMiddleware:
    """Ends a session at its absolute lifetime, however active it has been (the idle
    timeout is the cookie age, pushed back on every request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            started = request.session.setdefault("onwatch_signed_in_at", time.time())
            if time.time() - float(started) > settings.SESSION_MAX_LIFETIME:
                logout(request)
                return redirect(settings.LOGIN_URL)
        return self.get_response(request)


def has_second_factor(user_id: int) -> bool:
    found: bool = Authenticator.objects.filter(
        user_id=user_id, type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]
    ).exists()
    return found


class RequireMFAMiddleware:
    """An account can do nothing but enrol until it has a second factor. No setting
    switches this off."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (
            user.is_authenticated
            and not request.path.startswith(ENROL_PATHS)
            and not has_second_factor(user.pk)
        ):
            if request.path.startswith("/api/"):
                return HttpResponse("Enrol a second factor first", status=403)
            return redirect("mfa_activate_totp")
        return self.get_response(request)
