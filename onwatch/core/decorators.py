"""Every view says which permission it needs, or that it is public and why.

The permission is kept on the view as `onwatch_permission`; the matrix test reads it for
every URL pattern and fails on a view that has neither.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseForbidden, JsonResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string
from django.utils import timezone

from onwatch.core.models import ApiToken, Membership, hash_token
from onwatch.core.roles import PERMISSIONS, SCOPES, has_permission

# HttpResponseBase: a streamed answer (server-sent events) is a view's answer too.
View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def require(permission: str) -> Callable[[View], View]:
    """A signed-in member whose role holds `permission`; others get sign-in or 403."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            membership: Membership | None = getattr(request, "membership", None)
            if membership is None or not has_permission(membership.role, permission):
                body = render_to_string(
                    "web/forbidden.html", {"permission": PERMISSIONS[permission][1]}, request
                )
                return HttpResponseForbidden(body)
            return view(request, *args, **kwargs)

        wrapped.onwatch_permission = permission  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def can(request: HttpRequest, permission: str) -> bool:
    """Whether the signed-in member's role holds `permission` (to show or hide a button;
    the view behind the button still checks with `require`)."""
    membership: Membership | None = getattr(request, "membership", None)
    return membership is not None and has_permission(membership.role, permission)


def public(reason: str) -> Callable[[View], View]:
    """Reachable without a role (sign-up links, health checks). The reason is documentation
    that the matrix test insists on."""

    def decorate(view: View) -> View:
        view.onwatch_public = reason  # type: ignore[attr-defined]
        return view

    return decorate


def api(scope: str) -> Callable[[View], View]:
    """A bearer token holding `scope`, whose owner's current role still allows it."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    permission = SCOPES[scope]

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            header = request.META.get("HTTP_AUTHORIZATION", "")
            if not header.startswith("Bearer "):
                return api_error(401, "Send an API token: Authorization: Bearer <token>")
            token = (
                ApiToken.objects.filter(token_hash=hash_token(header[7:].strip()))
                .select_related("user", "org")
                .first()
            )
            if token is None or not token.active:
                return api_error(401, "This API token is unknown, revoked or expired")
            if scope not in token.scopes:
                return api_error(403, f"This API token lacks the scope {scope}")
            m = Membership.objects.filter(user=token.user, org=token.org).first()
            if m is None or not has_permission(m.role, permission):
                return api_error(403, "The token's owner no longer has this permission")
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
            request.user = token.user
            request.org = token.org  # type: ignore[attr-defined]
            request.membership = m  # type: ignore[attr-defined]
            # What else the token may do, for views that show more to those who may write.
            request.token_scopes = frozenset(token.scopes)  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        wrapped.onwatch_permission = permission  # type: ignore[attr-defined]
        wrapped.onwatch_scope = scope  # type: ignore[attr-defined]
        wrapped.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def api_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)
