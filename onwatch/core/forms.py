"""Forms for members, invites and API tokens, and the small operations they drive.

The rules themselves (who may grant which role) live in roles.py; these functions apply
them to rows, under a lock where a race could break "the last owner stays".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from onwatch.core.models import ApiToken, Invite, Membership, Organization, hash_token
from onwatch.core.roles import Role, role_change_refusal, roles_grantable_by, scopes_for


class MemberError(Exception):
    """A role change or removal the rules refuse; the message says what to do instead."""


def _role_choices(actor_role: str) -> list[tuple[str, str]]:
    return [(r.value, r.label) for r in roles_grantable_by(actor_role)]


class InviteForm(forms.Form):
    role = forms.ChoiceField()
    email = forms.EmailField(
        required=False, help_text="Optional: a note of whom the link is for; it is not mailed."
    )

    def __init__(self, *args: Any, actor_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(actor_role)  # type: ignore[attr-defined]
        self.fields["role"].initial = Role.VIEWER


class RoleForm(forms.Form):
    role = forms.ChoiceField()

    def __init__(self, *args: Any, actor_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(actor_role)  # type: ignore[attr-defined]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “CI status check”.")
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Pick at least one scope; a token without one can do nothing."},
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=3650,
        help_text="A token stops working after this; make a new one then.",
    )

    def __init__(self, *args: Any, role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = [(s, s) for s in scopes_for(role)]  # type: ignore[attr-defined]
        self.fields["days"].initial = settings.API_TOKEN_DEFAULT_DAYS


def issue_invite(actor: Membership, role: str, email: str = "") -> tuple[Invite, str]:
    if role not in roles_grantable_by(actor.role):
        raise MemberError("Only an owner can invite owners; pick another role or ask one.")
    return Invite.issue(role, actor.org, email=email, created_by=actor.user)


def _locked(actor: Membership, target: Membership) -> tuple[Membership, Membership, int]:
    """Fresh, locked rows of the actor and the target, and the number of owners.

    Every membership of the organization is locked, in one order, so two owners demoting
    each other at the same moment are serialised: the second sees that it is no longer an
    owner (and the organization is never left without one).
    """
    rows = {
        m.pk: m
        for m in Membership.objects.select_for_update(of=("self",))
        .filter(org_id=target.org_id)
        .select_related("user")
        .order_by("pk")
    }
    me, them = rows.get(actor.pk), rows.get(target.pk)
    if me is None:
        raise MemberError("You are no longer a member of this organization.")
    if them is None:
        raise MemberError("That person is no longer a member; reload the page.")
    return me, them, sum(m.role == Role.OWNER for m in rows.values())


def _refuse(me: Membership, them: Membership, new: str | None, owners: int) -> None:
    refusal = role_change_refusal(
        me.role, them.role, new, is_self=me.user_id == them.user_id, owners=owners
    )
    if refusal:
        raise MemberError(refusal)


def _sync_staff(user: Any) -> None:
    """Only owners may open the Django admin: a demoted or removed owner loses it at once."""
    is_owner = Membership.objects.filter(user=user, role=Role.OWNER).exists()
    if user.is_staff != is_owner or user.is_superuser != is_owner:
        user.is_staff = user.is_superuser = is_owner
        user.save(update_fields=["is_staff", "is_superuser"])


def change_role(actor: Membership, target: Membership, new_role: str) -> str:
    """Moves `target` to `new_role` and returns the old role."""
    with transaction.atomic():
        me, them, owners = _locked(actor, target)
        _refuse(me, them, new_role, owners)
        old = them.role
        them.role = new_role
        them.save(update_fields=["role"])
        _sync_staff(them.user)
    return old


def remove_member(actor: Membership, target: Membership) -> None:
    with transaction.atomic():
        me, them, owners = _locked(actor, target)
        _refuse(me, them, None, owners)
        user = them.user
        them.delete()
        # Their tokens for this organization would fail anyway (no membership); revoking
        # them makes that visible and keeps it so if they are invited back.
        ApiToken.objects.filter(user=user, org_id=them.org_id, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        _sync_staff(user)
        if not Membership.objects.filter(user=user).exists():
            # A person in no organization has nothing to sign in to.
            user.is_active = False
            user.save(update_fields=["is_active"])


@dataclass
class NewToken:
    token: ApiToken
    raw: str


def issue_token(user: Any, org: Organization, name: str, scopes: list[str], days: int) -> NewToken:
    """A token `ow_<prefix>_<secret>`: 256 random bits, only its SHA-256 stored. The
    prefix lets people tell tokens apart in lists without the secret."""
    prefix = secrets.token_hex(4)
    raw = f"ow_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user,
        org=org,
        name=name,
        prefix=prefix,
        token_hash=hash_token(raw),
        scopes=sorted(scopes),
        expires_at=timezone.now() + timedelta(days=days),
    )
    return NewToken(token, raw)


def revoke_token(token: ApiToken) -> bool:
    """Revokes an active token; False when it was already revoked."""
    return bool(
        ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
    )
