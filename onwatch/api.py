"""The typed JSON API under /api/v1/ (django-ninja), with its schema at /api/v1/openapi.json.

Every operation holds one token scope, checked by the very rules of the plain API views
(core/decorators.py `api()`): unknown, expired or revoked tokens get 401, a missing scope
or an owner whose role no longer allows it 403. The URL patterns carry the scope of each
method (`onwatch_operations`), so the permission matrix test walks these views too.

The shared pieces live in core/rest.py; each app registers its own router with
core/hooks.py `add_router`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, reverse
from django.utils.module_loading import import_string
from ninja import NinjaAPI, Router
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError

from onwatch.core.decorators import public
from onwatch.core.hooks import ROUTERS
from onwatch.core.rest import OPERATIONS, http_error, validation_error

api = NinjaAPI(
    title="onwatch",
    version="1",
    description="Monitors, escalation policies, incidents and maintenance windows.",
    urls_namespace="api",
    # The interactive docs page loads scripts from a CDN, which the Content-Security-Policy
    # forbids; the schema itself is served and any OpenAPI viewer can read it.
    docs_url=None,
)
api.add_exception_handler(NinjaValidationError, validation_error)
api.add_exception_handler(HttpError, http_error)


def _register_routers() -> None:
    for mount in ROUTERS.values():
        router: Router = import_string(mount.router.replace(":", "."))
        api.add_router(mount.prefix, router, tags=[mount.tag])


@public("a pointer to the API's schema, which describes no data")
def root(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    return JsonResponse({"openapi": reverse("api:openapi-json")})


def _schema_view(inner: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @public("the API's description holds no data, and clients read it before holding a token")
    def openapi_json(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return inner(request, *args, **kwargs)

    return openapi_json


def _operations_view(group: list[URLPattern]) -> Callable[..., HttpResponse]:
    # One Django view per path answers every method there (ninja's own dispatch); Django
    # only ever resolves the first pattern of a path, so that one carries all the marks.
    inner = group[0].callback

    def api_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        answer: HttpResponse = inner(request, *args, **kwargs)
        return answer

    ops = [OPERATIONS[str(p.name)] for p in group]
    api_view.onwatch_operations = {op.method: op.scope for op in ops}  # type: ignore[attr-defined]
    api_view.csrf_exempt = True  # type: ignore[attr-defined]
    return api_view


def _marked(group: list[URLPattern]) -> URLPattern:
    first = group[0]
    if first.name == "api-root":
        view: Callable[..., HttpResponse] = root
    elif first.name == "openapi-json":
        view = _schema_view(first.callback)
    else:
        view = _operations_view(group)
    return URLPattern(first.pattern, view, first.default_args, first.name)


@cache
def urls() -> tuple[list[URLPattern], str, str]:
    """What onwatch/urls.py includes at api/v1/ (built once: routers mount once)."""
    _register_routers()
    patterns, app_name, namespace = api.urls
    grouped: dict[str, list[URLPattern]] = {}
    for p in patterns:
        assert isinstance(p, URLPattern)
        grouped.setdefault(str(p.pattern), []).append(p)
    return [_marked(group) for group in grouped.values()], app_name, namespace
