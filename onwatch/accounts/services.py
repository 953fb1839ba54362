"""Creating accounts from invites (shared by the invite page and `onwatch createowner`),
and recording sign-in activity where the account's owners see it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from onwatch.accounts.lockout import Pause
from onwatch.core import audit
from onwatch.core.models import AuditEntry, Invite, Membership, Organization
from onwatch.core.roles import Role

# What the sign-in activity page shows, in the words it shows them with.
SIGN_IN_ACTIONS = {
    "sign-in": "Signed in",
    "sign-in-failed": "Wrong password",
    "mfa-failed": "Wrong second-factor code",
    "sign-in-paused": "Refused: paused after too many wrong tries",
    "sign-in-alert": "Alert sent: repeated failed sign-ins",
    "sign-out": "Signed out",
}
FAILURES = ("sign-in-failed", "mfa-failed", "sign-in-paused")
# More failures than one person's typos (allauth pauses an account after 5 in 5 minutes),
# so an alert means a forgotten password or someone guessing; at most one per window.
ALERT_AFTER = 8
ALERT_WINDOW = timedelta(minutes=30)


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


def orgs_of(email: str) -> list[Organization]:
    if not email:
        return []
    found = Organization.objects.filter(memberships__user__email__iexact=email)
    return list(found.distinct().order_by("pk"))


def record_sign_in(
    action: str, request: HttpRequest | None, email: str, actor: str | None = None, **data: Any
) -> None:
    """Sign-in activity belongs to every organization the account is a member of, so
    their owners see it; tries for an address that is no account stay install-wide."""
    orgs: list[Organization | None] = [*orgs_of(email)] or [None]
    for org in orgs:
        audit.record(action, request=request, actor=actor, org=org, target=email, **data)
        if org is not None and action in FAILURES:
            alert_if_repeated(org, email)


def record_mfa_change(action: str, request: HttpRequest, user: Any, kind: str) -> None:
    """allauth has added, removed or reset a second factor of `user`: "mfa-added",
    "mfa-removed" or "mfa-reset"."""
    audit.record(action, request=request, target=user.email, kind=kind)


def record_pause(request: HttpRequest | None, email: str, step: str, pause: Pause | None) -> None:
    until = pause.until.isoformat(timespec="seconds") if pause else ""
    per = pause.per if pause else "unknown"
    record_sign_in("sign-in-paused", request, email, "anonymous", step=step, per=per, until=until)


def recent_failures(org: Organization, email: str, now: Any) -> list[AuditEntry]:
    since = now - ALERT_WINDOW
    rows = AuditEntry.objects.filter(org=org, target=email, action__in=FAILURES, at__gte=since)
    return list(rows.order_by("seq"))


def alert_if_repeated(org: Organization, email: str) -> bool:
    """Alert the organization once per window when one account keeps failing to sign in."""
    now = timezone.now()
    failures = recent_failures(org, email, now)
    if len(failures) < ALERT_AFTER:
        return False
    sent = AuditEntry.objects.filter(
        org=org, target=email, action="sign-in-alert", at__gte=now - ALERT_WINDOW
    )
    if sent.exists():
        return False
    from onwatch.alerts.services import raise_alert

    title, body = alert_text(email, failures)
    audit.record("sign-in-alert", actor="system", org=org, target=email, failures=len(failures))
    raise_alert(org, title, body, link=reverse("sign_in_activity"))
    return True


def alert_text(email: str, failures: list[AuditEntry]) -> tuple[str, str]:
    since = timezone.localtime(failures[0].at)
    last = failures[-1].ip or "an unknown address"
    title = f"Repeated failed sign-ins to {email}"
    body = (
        f"{len(failures)} failed sign-in attempts to {email} since "
        f"{since:%Y-%m-%d %H:%M %Z}, the latest from {last}.\n"
        f"If {email} has not just forgotten their password, someone may be guessing it: "
        "ask them to choose a new password and to check that their second factor is still "
        "theirs. onwatch already pauses sign-in to the account after repeated wrong tries."
    )
    return title, body
