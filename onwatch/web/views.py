from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views import defaults

from onwatch.core.dashboard import cards_for
from onwatch.core.decorators import public, require
from onwatch.core.network import FORWARDING, is_loopback


@require("dashboard.view")
def dashboard(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    role = request.membership.role  # type: ignore[attr-defined]
    ctx = {"top": cards_for(org, role, "top"), "sections": cards_for(org, role, "section")}
    return render(request, "web/dashboard.html", ctx)


@public("load balancers and `onwatch up` ask whether the web process answers")
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


# onwatch's icon: a ring, in the accent colour of its pages.
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<circle cx="16" cy="16" r="12" fill="none" stroke="#1f6feb" stroke-width="6"/></svg>'
)


@public("browsers ask for a site's icon by themselves, on the sign-in page too")
def favicon(request: HttpRequest) -> HttpResponse:
    """Every page names it, and browsers ask /favicon.ico by themselves where none is
    named: without it, each page left a failed request in the browser's console."""
    response = HttpResponse(ICON, content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's handler400 (no permission check: it answers requests no view was chosen
    for). A Host onwatch does not answer to says which one it does and how to change it,
    instead of a bare "Bad Request" — to someone on this machine only: the address and
    settings of an installation are nobody else's business."""
    if not isinstance(exception, DisallowedHost):
        return defaults.bad_request(request, exception)
    # REMOTE_ADDR is the client's own: the web server takes X-Forwarded-For from trusted
    # proxies only (ONWATCH_TRUSTED_PROXIES). A proxy nobody named arrives from loopback
    # too, on behalf of anyone: its forwarding headers tell it apart from a local program.
    local = is_loopback(request.META.get("REMOTE_ADDR", ""))
    if not local or any(h in request.META for h in FORWARDING):
        return defaults.bad_request(request, exception)
    asked = request.META.get("HTTP_HOST", "")
    return HttpResponseBadRequest(
        f"This onwatch answers at {settings.SITE_ROOT}, not at {asked}. To use this "
        "address, set ONWATCH_BASE_URL to it (or add the name to ONWATCH_ALLOWED_HOSTS) "
        "and restart onwatch.\n",
        content_type="text/plain; charset=utf-8",
    )
