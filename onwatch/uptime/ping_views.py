"""Healthchecks-compatible ping URLs: a cron script switches to onwatch by changing a URL.

    /ping/<uuid>[/start|/fail|/log|/<exit status>][/][?rid=<uuid>]
    /ping/<ping key>/<slug>[/start|/fail|/log|/<exit status>][/][?rid=<uuid>][&create=1]

Answers are one line of plain text, for the person reading a cron job's output.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from onwatch.core.decorators import public
from onwatch.uptime import pings
from onwatch.uptime.models import Monitor
from onwatch.uptime.pings import PingError, Received

METHODS = ("GET", "POST", "HEAD")
REASON = "heartbeat pings: the UUID is the credential"
USAGE = (
    "Not a ping URL; use /ping/<uuid>, /ping/<uuid>/start, /fail, /log or /<exit status 0-255>, "
    "or /ping/<ping key>/<slug> with the same endings"
)


def text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def read_body(request: HttpRequest) -> bytes:
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        raise PingError(400, f"Content-Length {declared[:20]!r} is not a number")
    raw = request.read(pings.BODY_REFUSE + 1) if int(declared) <= pings.BODY_REFUSE else b""
    if int(declared) > pings.BODY_REFUSE or len(raw) > pings.BODY_REFUSE:
        raise PingError(
            413, f"The body is over {pings.BODY_REFUSE} bytes; send at most {pings.BODY_KEEP}"
        )
    return raw


def received(request: HttpRequest, action: str | None) -> Received:
    """Everything about the request that is kept with the ping; PingError if malformed."""
    kind, exit_status = pings.parse_action(action)
    return Received(
        type=kind,
        exit_status=exit_status,
        run_id=pings.parse_run_id(request.GET.get("rid")),
        body=pings.body_text(read_body(request)),
        remote_addr=request.META.get("REMOTE_ADDR") or "",
        method=request.method or "",
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def take(
    request: HttpRequest, action: str | None, lookup: Callable[[], tuple[Monitor | None, bool]]
) -> HttpResponse:
    if request.method not in METHODS:
        answer = text(405, f"Send pings with {', '.join(METHODS)}")
        answer["Allow"] = ", ".join(METHODS)
        return answer
    try:
        got = received(request, action)
        monitor, created = lookup()
    except PingError as e:
        return text(e.status, str(e))
    if monitor is None:
        return text(404, "not found")
    if not pings.LIMIT.allow_request(getattr(request, "scope", None), str(monitor.ping_id)):
        answer = text(429, pings.too_many())
        answer["Retry-After"] = "1"
        return answer
    pings.record(monitor, got, timezone.now())
    return text(201, "Created") if created else text(200, "OK")


@public(REASON)
@csrf_exempt
def ping(request: HttpRequest, code: str, action: str | None = None) -> HttpResponse:
    return take(request, action, lambda: (pings.find(uuid.UUID(code)), False))


@public(REASON)
@csrf_exempt
def ping_slug(request: HttpRequest, key: str, slug: str, action: str | None = None) -> HttpResponse:
    create = request.GET.get("create") == "1"
    return take(request, action, lambda: pings.find_by_slug(key, slug, create))


@public(REASON)
@csrf_exempt
def malformed(request: HttpRequest) -> HttpResponse:
    return text(400, USAGE)
