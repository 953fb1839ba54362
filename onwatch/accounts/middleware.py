from __future__ import annotations

import time
from collections.abc import Callable

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from onwatch.accounts.adapter import SECOND_FACTORS

# Paths an account without a second factor may still reach: enrolment itself, signing out,
# confirming the password again (enrolment asks for it after a few minutes), and the
# static files those pages need.
ENROL_PATHS = (
    "/accounts/2fa/",
    "/accounts/logout/",
    "/accounts/login/",
    "/accounts/reauthenticate/",
    "/static/",
)
# Requests a browser makes by itself, never a person asking for a page. Sent to enrolment
# they were followed in the background and showed it a second time, out of sight.
BROWSER_OWN_PATHS = ("/favicon.ico", "/robots.txt", "/apple-touch-icon")
# Set at sign-in (signals.py); the absolute lifetime counts from here.
SIGNED_IN_AT = "onwatch_signed_in_at"


class SessionLifetimeMiddleware:
    """Ends a session at its absolute lifetime, however active it has been (the idle
    timeout is the cookie age, pushed back on every request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            started = request.session.setdefault(SIGNED_IN_AT, time.time())
            if time.time() - float(started) > settings.SESSION_MAX_LIFETIME:
                logout(request)
                hours = settings.SESSION_MAX_LIFETIME // 3600
                messages.info(request, f"Sessions last at most {hours} hours; sign in again.")
                return redirect(settings.LOGIN_URL)
        return self.get_response(request)


def has_second_factor(user_id: int) -> bool:
    found: bool = Authenticator.objects.filter(user_id=user_id, type__in=SECOND_FACTORS).exists()
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
            and not request.path.startswith(ENROL_PATHS + BROWSER_OWN_PATHS)
            and not has_second_factor(user.pk)
        ):
            if request.path.startswith("/api/"):
                return HttpResponse("Enrol a second factor first", status=403)
            return redirect("mfa_activate_totp")
        return self.get_response(request)
