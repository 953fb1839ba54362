"""Creating accounts from invites, shared by the invite page and `onwatch createowner`."""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from onwatch.core import audit
from onwatch.core.models import Invite, Membership, Organization
from onwatch.core.roles import Role


def first_run() -> bool:
    return not Membership.objects.filter(role=Role.OWNER).exists()


def create_account(
    email: str,
    password: str,
    role: str,
    org: Organization | None,
    org_name: str = "",
    request: HttpRequest | None = None,
) -> Any:
    with transaction.atomic():
        if org is None:
            org = Organization.objects.create(name=org_name or "My company")
            audit.record("org-created", request=request, actor=email, org=org, target=org.name)
        user = get_user_model().objects.create_user(username=email, email=email, password=password)
        if role == Role.OWNER:
            # Owners may open the Django admin; it sits behind the same sign-in and MFA.
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=False)
        Membership.objects.create(org=org, user=user, role=role)
        audit.record("member-added", request=request, actor=email, org=org, target=email, role=role)
    return user


def accept_invite(invite: Invite, request: HttpRequest | None, **fields: Any) -> Any:
    with transaction.atomic():
        locked = Invite.objects.select_for_update().get(pk=invite.pk)
        if not locked.usable:
            raise ValueError("This link has been used or has expired.")
        if locked.org is None and not first_run():
            # The first-run link is printed to the console and may linger in logs: once an
            # owner exists it is worthless, whoever reads it later.
            raise ValueError("This set-up link is void: the owner account exists already.")
        user = create_account(role=locked.role, org=locked.org, request=request, **fields)
        locked.used_at = timezone.now()
        locked.save(update_fields=["used_at"])
    return user
