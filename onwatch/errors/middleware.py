"""CORS on every answer where browser SDKs send, whoever made it: the views' own, Django's
404 and 500, another middleware's. A browser shows the SDK an answer without it as a
network error, so the SDK could not read a 429's Retry-After or X-Sentry-Rate-Limits
and would send on. The ingest layer replays these headers from Django's answer."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# Browser SDKs send from the app's own origin: any origin may post, with the key as the
# credential (no cookies are read here, so no CSRF to fear).
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Sentry-Error, X-Sentry-Rate-Limits, Retry-After",
}
SDK_PATH = re.compile(r"/api/[^/]+/(?:envelope|store)/")


class SdkCorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if SDK_PATH.match(request.path_info):
            for name, value in CORS.items():
                response[name] = value
        return response
