"""The envelope and store endpoints through Django: the reference answers, and the path
for what the ingest layer hands on (bad input, streamed bodies, the first request per
host). The same code as the fast route (intake.py)."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from onwatch.core.decorators import public
from onwatch.core.ingest import Answer
from onwatch.errors import digest, intake, protocol
from onwatch.errors.protocol import ProtocolError

# The CORS headers of every answer here are added by middleware.SdkCorsMiddleware.
PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "3600",
}


@public("SDKs send with the project's key from its DSN, checked on every request")
@csrf_exempt
def envelope(request: HttpRequest, project_id: int) -> HttpResponse:
    return receive(request, project_id, "envelope")


@public("SDKs send with the project's key from its DSN, checked on every request")
@csrf_exempt
def store(request: HttpRequest, project_id: int) -> HttpResponse:
    return receive(request, project_id, "store")


def receive(request: HttpRequest, project_id: int, kind: str) -> HttpResponse:
    if request.method == "OPTIONS":
        return preflight(request)
    if request.method != "POST":
        return answered(intake.refusal(405, "send events with POST"))
    try:
        body = read_body(request)
        incoming = intake.accept(
            project_id,
            kind,
            {k.lower(): v for k, v in request.headers.items()},
            request.META.get("QUERY_STRING", "").encode("latin-1"),
            body,
            request.META.get("REMOTE_ADDR", ""),
        )
    except ProtocolError as e:
        return answered(intake.refusal(e.status, str(e)))
    digest.events_first(incoming)
    with transaction.atomic():
        return answered(intake.write(incoming, timezone.now()))


def read_body(request: HttpRequest) -> bytes:
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > protocol.MAX_BODY:
        raise ProtocolError(f"the body is over {protocol.MAX_BODY // 1024} KiB", 413)
    # A streamed body has no length to check first: read one byte past the limit.
    body = request.read(protocol.MAX_BODY + 1)
    if len(body) > protocol.MAX_BODY:
        raise ProtocolError(f"the body is over {protocol.MAX_BODY // 1024} KiB", 413)
    return body


def answered(answer: Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type="application/json")
    for raw_name, raw_value in answer.headers:
        response[raw_name.decode()] = raw_value.decode()
    return response


def preflight(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(status=200)
    for name, value in PREFLIGHT.items():
        response[name] = value
    asked = request.headers.get("Access-Control-Request-Headers", "")
    response["Access-Control-Allow-Headers"] = asked or "content-type, x-sentry-auth"
    return response
