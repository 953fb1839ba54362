"""Members, invites and API tokens: the one place that changes them and writes their audit
entries, whatever page, command or test asks.

The rules themselves (who may grant which role) live in roles.py; these functions apply
them to rows, under a lock where a race could break "the last owner stays".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from onwatch.core import audit, pushkeys, ssh
from onwatch.core.audit import Actor
from onwatch.core.models import ApiToken, Invite, Membership, Organization, SshKey, hash_token
from onwatch.core.roles import Role, role_change_refusal, roles_grantable_by


class MemberError(Exception):
    """A role change or removal the rules refuse; the message says what to do instead."""


def person(user: Any) -> Actor:
    """A member acting without a request (tests, scripts): named, but from no address."""
    return Actor(user.get_username(), user=user)


def issue_invite(
    member: Membership, role: str, email: str = "", by: Actor | None = None
) -> tuple[Invite, str]:
    """A link for `role` issued by `member` (`by` adds the address they act from)."""
    if role not in roles_grantable_by(member.role):
        raise MemberError("Only an owner can invite owners; pick another role or ask one.")
    with transaction.atomic():
        invite, raw = Invite.issue(role, member.org, email=email, created_by=member.user)
        audit.record(
            "invite-created",
            actor=by or person(member.user),
            org=member.org,
            target=email or role,
            role=role,
        )
    return invite, raw


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


def change_role(
    member: Membership, target: Membership, new_role: str, by: Actor | None = None
) -> str:
    """`member` moves `target` to `new_role`; returns the old role."""
    with transaction.atomic():
        me, them, owners = _locked(member, target)
        _refuse(me, them, new_role, owners)
        old = them.role
        if old == new_role:
            return old
        them.role = new_role
        them.save(update_fields=["role"])
        _sync_staff(them.user)
        audit.record(
            "member-role-changed",
            actor=by or person(me.user),
            org=them.org,
            target=them.user.email,
            was=old,
            now=new_role,
        )
    return old


def remove_member(member: Membership, target: Membership, by: Actor | None = None) -> None:
    with transaction.atomic():
        me, them, owners = _locked(member, target)
        _refuse(me, them, None, owners)
        user = them.user
        them.delete()
        audit.record(
            "member-removed",
            actor=by or person(me.user),
            org=them.org,
            target=user.email,
            role=them.role,
        )
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


def issue_token(
    user: Any,
    org: Organization,
    name: str,
    scopes: list[str],
    days: int,
    by: Actor | None = None,
) -> NewToken:
    """A token `ow_<prefix>_<secret>`: 256 random bits, only its SHA-256 stored. The
    prefix lets people tell tokens apart in lists without the secret. People make their
    own tokens, so `user` is the actor unless `by` says more (their address)."""
    prefix = secrets.token_hex(4)
    raw = f"ow_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            org=org,
            name=name,
            prefix=prefix,
            token_hash=hash_token(raw),
            scopes=sorted(scopes),
            expires_at=timezone.now() + timedelta(days=days),
        )
        audit.record(
            "token-created",
            actor=by or person(user),
            org=org,
            target=f"{token.name} ({token.prefix})",
            scopes=token.scopes,
            expires=token.expires_at,
        )
    return NewToken(token, raw)


def revoke_token(token: ApiToken, by: Actor | None = None) -> bool:
    """Revokes an active token (by its owner unless `by` says otherwise); False when it
    was already revoked."""
    with transaction.atomic():
        active = ApiToken.objects.filter(pk=token.pk, revoked_at=None)
        if not active.update(revoked_at=timezone.now()):
            return False
        audit.record(
            "token-revoked",
            actor=by or person(token.user),
            org=token.org,
            target=f"{token.name} ({token.prefix})",
        )
    return True


class KeyRefused(ValueError):
    """The SSH key cannot be added; the message is one line saying why."""


def add_ssh_key(user: Any, text: str, name: str = "", by: Actor | None = None) -> SshKey:
    """A person's public key for `git push`, written into the authorized_keys file at
    once. KeyRefused for a key that is not one, or that someone already added (a key
    names one person); KeyFileError when it is saved but the file could not be written."""
    try:
        key = ssh.parse_public_key(text)
    except ssh.SshError as e:
        raise KeyRefused(str(e)) from None
    label = " ".join((name or key.comment or key.kind).split())[:100]
    with transaction.atomic():
        if SshKey.objects.filter(fingerprint=key.fingerprint).exists():
            raise KeyRefused(
                f"the key {key.fingerprint} is already added (a key belongs to one person); "
                "make a key of your own with ssh-keygen -t ed25519"
            )
        row = SshKey.objects.create(
            user=user, name=label, public_key=key.line, fingerprint=key.fingerprint
        )
        _record_key("ssh-key-added", row, by)
    pushkeys.sync()
    return row


def remove_ssh_key(key: SshKey, by: Actor | None = None) -> None:
    with transaction.atomic():
        SshKey.objects.filter(pk=key.pk).delete()
        _record_key("ssh-key-removed", key, by)
    pushkeys.sync()


def note_key_used(key: SshKey) -> None:
    SshKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())


def _record_key(action: str, key: SshKey, by: Actor | None) -> None:
    # A key is a person's, not an organization's: each organization they are in sees it.
    orgs: list[Organization | None] = [
        m.org for m in Membership.objects.filter(user=key.user).select_related("org")
    ]
    for org in orgs or [None]:
        audit.record(
            action,
            actor=by or person(key.user),
            org=org,
            target=f"{key.name} ({key.fingerprint})",
            user=key.user.get_username(),
        )
