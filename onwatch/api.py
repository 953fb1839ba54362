"""The typed JSON API under /api/v1/ (django-ninja), with its schema at /api/v1/openapi.json.

Every operation holds one token scope, checked by the very rules of the plain API views
(core/decorators.py `api()`): unknown, expired or revoked tokens get 401, a missing scope
or an owner whose role no longer allows it 403. The URL patterns carry the scope of each
method (`onwatch_operations`), so the permission matrix test walks these views too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, TypeVar

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, reverse
from ninja import NinjaAPI, Router, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security.http import HttpBearer
from pydantic import AfterValidator, Field

from onwatch.core.decorators import api as token_gate
from onwatch.core.decorators import api_error, public
from onwatch.core.models import Organization
from onwatch.core.roles import SCOPES

Fn = TypeVar("Fn", bound=Callable[..., Any])

# Database ids are 64-bit; a larger number reaching a query is an error in the driver (500),
# so anything beyond is simply "not found".
MAX_ID = 2**63 - 1
MAX_LIMIT = 500


def no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text; refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def plain_json(value: Any) -> Any:
    """`value` if every string and number in it can be stored as JSON on any database;
    raises ValueError otherwise (NUL in text, NaN or infinity)."""
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key)
            plain_json(item)
    elif isinstance(value, list):
        for item in value:
            plain_json(item)
    return value


class ErrorOut(Schema):
    error: str


# Answers every operation may give besides its own.
ERRORS: dict[int, type[Schema]] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}


def _passed(request: HttpRequest) -> HttpResponse:
    return PASSED


PASSED = HttpResponse(status=204)


class ScopedToken(HttpBearer):
    """A bearer token holding `scope`: the plain API's decorator does the checking (and sets
    request.user, request.org and request.membership), so both halves of the API keep one
    set of rules."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.permission = SCOPES[scope]
        self._gate = token_gate(scope)(_passed)
        super().__init__()

    def __call__(self, request: HttpRequest) -> Any:
        answer = self._gate(request)
        if answer is not PASSED:
            raise HttpError(answer.status_code, json.loads(answer.content)["error"])
        return request.user

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return None  # never called: __call__ above does the whole check


@dataclass(frozen=True)
class Operation:
    method: str
    scope: str


# URL name (the view function's name) -> its method and scope.
OPERATIONS: dict[str, Operation] = {}


def operation(
    router: Router, method: str, path: str, scope: str, **kwargs: Any
) -> Callable[[Fn], Fn]:
    """Declare an API operation behind one scope (the only way operations are added)."""

    def decorate(fn: Fn) -> Fn:
        name = fn.__name__
        if name in OPERATIONS:
            raise ValueError(f"two API operations are called {name}")
        OPERATIONS[name] = Operation(method, scope)
        doc = (fn.__doc__ or "").strip()
        return router.api_operation(
            [method],
            path,
            auth=ScopedToken(scope),
            url_name=name,
            description=f"{doc}\n\nNeeds a token with the scope `{scope}`.".strip(),
            openapi_extra={"x-onwatch-scope": scope},
            **kwargs,
        )(fn)

    return decorate


def org_of(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


def not_found(what: str, pk: int, listing: str) -> HttpError:
    return HttpError(404, f"No {what} {pk} in this organization; list them at {listing}")


def unprocessable(message: str) -> HttpError:
    return HttpError(422, message)


def _where(loc: list[Any]) -> str:
    # ("body", "body", "interval") -> "interval"; query and path names stay as they are.
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "the request"


def _validation_error(
    request: HttpRequest, exc: NinjaValidationError | type[NinjaValidationError]
) -> HttpResponse:
    assert isinstance(exc, NinjaValidationError)
    first = exc.errors[0] if exc.errors else {}
    field = _where(list(first.get("loc", [])))
    kind = first.get("type")
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "json_invalid" or (kind == "missing" and field == "the request"):
        text = "Send a JSON object in the request body, as the schema describes"
    elif kind == "missing":
        text = f"'{field}' is required"
    elif kind == "extra_forbidden":
        text = f"'{field}' is not a field of this request; remove it"
    elif kind == "value_error" and "'" in message:
        text = message  # our own validators name the field
    else:
        text = f"'{field}' is not valid: {message[:1].lower()}{message[1:]}"
    return JsonResponse({"error": text}, status=422)


def _http_error(request: HttpRequest, exc: HttpError | type[HttpError]) -> HttpResponse:
    assert isinstance(exc, HttpError)
    message = exc.message
    if exc.status_code == 400 and message == "Cannot parse request body":  # ninja's words
        message = "The request body is not valid JSON; send a JSON object as the schema describes"
    response = api_error(exc.status_code, message)
    if exc.status_code == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


api = NinjaAPI(
    title="onwatch",
    version="1",
    description="Monitors, escalation policies, incidents and maintenance windows.",
    urls_namespace="api",
    # The interactive docs page loads scripts from a CDN, which the Content-Security-Policy
    # forbids; the schema itself is served and any OpenAPI viewer can read it.
    docs_url=None,
)
api.add_exception_handler(NinjaValidationError, _validation_error)
api.add_exception_handler(HttpError, _http_error)


def _register_routers() -> None:
    from onwatch.alerts.api import incidents, maintenance, policies
    from onwatch.uptime.api import monitors

    api.add_router("/monitors/", monitors, tags=["monitors"])
    api.add_router("/policies/", policies, tags=["escalation policies"])
    api.add_router("/incidents/", incidents, tags=["incidents"])
    api.add_router("/maintenance/", maintenance, tags=["maintenance windows"])


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
