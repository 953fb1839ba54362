from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from onwatch.core.models import Membership


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
