"""The shared pieces of the typed JSON API (django-ninja): token auth by scope, the error
shapes (the validators for text and ids are in core/validators.py). Each app exports its
own router (registered with core/hooks.py `add_router`); onwatch/api.py mounts them at
/api/v1/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security.http import HttpBearer

from onwatch.core.decorators import api as token_gate
from onwatch.core.decorators import api_error
from onwatch.core.models import Organization
from onwatch.core.roles import SCOPES

Fn = TypeVar("Fn", bound=Callable[..., Any])

MAX_LIMIT = 500


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


def validation_error(
    request: HttpRequest, exc: NinjaValidationError | type[NinjaValidationError]
) -> HttpResponse:
    assert isinstance(exc, NinjaValidationError)
    first = exc.errors[0] if exc.errors else {}
    field = _where(list(first.get("loc", [])))
    kind = first.get("type")
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    whole = field == "the request" and kind in ("missing", "model_type", "dict_type")
    if kind == "json_invalid" or whole:
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


def http_error(request: HttpRequest, exc: HttpError | type[HttpError]) -> HttpResponse:
    assert isinstance(exc, HttpError)
    message = exc.message
    if exc.status_code == 400 and message == "Cannot parse request body":  # ninja's words
        message = "The request body is not valid JSON; send a JSON object as the schema describes"
    response = api_error(exc.status_code, message)
    if exc.status_code == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response
