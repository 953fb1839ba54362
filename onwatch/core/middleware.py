from __future__ import annotations

import hmac
import os
import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from onwatch.config import PROXY_HEADER
from onwatch.core.models import Membership
from onwatch.core.network import through_unnamed_proxy
from onwatch.logfilters import REQUEST_ID


class OrganizationMiddleware:
    """Sets request.org and request.membership: the organization the user is working in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.org = None  # type: ignore[attr-defined]
        request.membership = None  # type: ignore[attr-defined]
        if request.user.is_authenticated:
            memberships = Membership.objects.filter(user=request.user).select_related("org")
            wanted = request.session.get("org_id")
            m = (wanted and memberships.filter(org_id=wanted).first()) or memberships.order_by(
                "created_at", "id"
            ).first()
            if m is not None:
                request.org = m.org  # type: ignore[attr-defined]
                request.membership = m  # type: ignore[attr-defined]
        return self.get_response(request)


UNNAMED_PROXY_HTTPS = (
    "onwatch cannot tell that this request came over HTTPS: it came through a proxy that "
    "is not named in ONWATCH_TRUSTED_PROXIES, and sending you to https again would only "
    "bring you back here. Name the proxy there (127.0.0.1 for one on this machine) and "
    "restart onwatch.\n"
)


class UnnamedProxyHttpsMiddleware:
    """With an https base URL, a proxy nobody named that says "this came over HTTPS" is
    not believed (only named proxies are: cli.cmd_web), so every page would send the
    browser to https again, in a loop. Say why once, in words, instead."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            settings.SECURE_SSL_REDIRECT
            and not request.is_secure()
            and request.META.get("HTTP_X_FORWARDED_PROTO", "").lower() == "https"
            and through_unnamed_proxy(request.META, settings.TRUSTED_PROXIES, settings.DOMAIN)
            and not any(
                re.search(p, request.path_info.lstrip("/")) for p in settings.SECURE_REDIRECT_EXEMPT
            )
        ):
            return HttpResponse(
                UNNAMED_PROXY_HTTPS, status=421, content_type="text/plain; charset=utf-8"
            )
        return self.get_response(request)


REQUEST_ID_HEADER = "X-Request-ID"
# An ID from a proxy in front (Caddy's {http.request.uuid}, for one) is kept so its log and
# ours name the same request; anything else is replaced, since it ends up in our log lines.
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{8,100}")


def request_id(incoming: str | None) -> str:
    """The request's ID: the one it came with when well formed, a new one otherwise."""
    if incoming and WELL_FORMED_ID.fullmatch(incoming):
        return incoming
    return os.urandom(16).hex()  # as random as a uuid4, without making one


class RequestIdMiddleware:
    """Gives every request an ID (request.id) and answers with it in X-Request-ID, so a
    report of a failed request can be found in the server's log. The ingest layer
    (onwatch/core/ingest) does the same for the requests it answers itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        request.id = rid  # type: ignore[attr-defined]
        # Every log line written while answering (a traceback among them) names it.
        token = REQUEST_ID.set(rid)
        try:
            response = self.get_response(request)
        finally:
            REQUEST_ID.reset(token)
        response[REQUEST_ID_HEADER] = rid
        return response


PROXY_META = "HTTP_" + PROXY_HEADER.upper().replace("-", "_")


class ProxyTokenMiddleware:
    """Behind onwatch's own Caddy (`onwatch up --domain`), a request is HTTPS only when it
    carries Caddy's token: the header is rewritten to "https" or "http", which is what
    SECURE_PROXY_SSL_HEADER reads. Always present, so Django never falls back to the
    scheme uvicorn took from a forged X-Forwarded-Proto on the loopback port."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.DOMAIN:
            given, token = request.META.get(PROXY_META, ""), settings.PROXY_TOKEN
            by_caddy = bool(token) and hmac.compare_digest(given.encode(), token.encode())
            request.META[PROXY_META] = "https" if by_caddy else "http"
        return self.get_response(request)
