"""Whether someone who was let in earlier may still be: for answers that outlive their
request (a live log stream stays open for as long as a job runs), which the permission
decorators checked only once, when it opened."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest

from onwatch.core.models import Membership
from onwatch.core.roles import has_permission


def still_signed_in(session_key: str | None, user_id: int | None) -> bool:
    """Whether the session still signs in this user: not signed out, not expired, not
    ended by a password change or a deactivated account. Django's own check, on a request
    that carries nothing but the session."""
    if not session_key or user_id is None:
        return False
    probe = HttpRequest()
    probe.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(probe)
    return bool(user.is_authenticated and user.pk == user_id)


def still_allowed(
    session_key: str | None, user_id: int | None, org_id: int, permission: str
) -> bool:
    """Signed in as before, still a member of the organization, and its role (which may
    have been lowered meanwhile) still holds `permission`."""
    if user_id is None or not still_signed_in(session_key, user_id):
        return False
    role = (
        Membership.objects.filter(user_id=user_id, org_id=org_id)
        .values_list("role", flat=True)
        .first()
    )
    return role is not None and has_permission(role, permission)
