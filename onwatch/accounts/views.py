from __future__ import annotations

from datetime import datetime

from allauth.account.internal.flows.login import record_authentication
from allauth.mfa.totp.internal.auth import clear_totp_secret
from django.contrib.auth import REDIRECT_FIELD_NAME, login
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render, resolve_url
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from onwatch.accounts.forms import AcceptInviteForm
from onwatch.accounts.services import SIGN_IN_ACTIONS, accept_invite, first_run
from onwatch.core.decorators import public, require
from onwatch.core.models import AuditEntry, Invite, hash_token

ACTIVITY_PAGE_SIZE = 50


@public("one-time invite links create accounts; the token is the credential")
@never_cache
def invite(request: HttpRequest, token: str) -> HttpResponse:
    found = Invite.objects.filter(token_hash=hash_token(token)).select_related("org").first()
    if found is None or not found.usable or (found.org is None and not first_run()):
        return invite_gone(request)
    form = AcceptInviteForm(request.POST or None, needs_org=found.org is None)
    if request.method == "POST" and form.is_valid():
        try:
            user = accept_invite(
                found,
                request,
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                org_name=form.cleaned_data.get("org_name", ""),
            )
        except ValueError:
            # Someone else used the link while this form was open.
            return invite_gone(request)
        # Recorded as allauth's own password sign-in is, so enrolling the second factor
        # next does not ask for the password again (see signals.confirm_fresh_password).
        record_authentication(request, user, method="password", email=user.email)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # Straight on to the second factor: nothing else is reachable without it.
        return redirect("mfa_activate_totp")
    return render(request, "accounts/invite.html", {"form": form, "invite": found})


def invite_gone(request: HttpRequest) -> HttpResponse:
    reason = "It has been used or has expired; ask whoever sent it for a new one."
    return render(request, "accounts/invite_gone.html", {"reason": reason}, status=404)


@public("the admin's own sign-in page: sends people to the one sign-in, with MFA")
@never_cache
def admin_login(request: HttpRequest, extra_context: object = None) -> HttpResponse:
    if request.user.is_authenticated:
        # Signed in (with a second factor, or the MFA middleware would have stopped them)
        # but not staff: sending them to sign in again would loop.
        body = render_to_string(
            "web/forbidden.html", {"permission": "open the Django admin"}, request
        )
        return HttpResponseForbidden(body)
    target = request.GET.get(REDIRECT_FIELD_NAME, "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = resolve_url("admin:index")
    login_url = resolve_url("account_login")
    return redirect(f"{login_url}?{urlencode({REDIRECT_FIELD_NAME: target})}")


# Every member enrols their own second factor, whatever their role.
@require("dashboard.view")
@require_POST
def new_totp_secret(request: HttpRequest) -> HttpResponse:
    """The one way to replace the secret shown for enrolment: the person asks for it (the
    enrolment page keeps showing the same one otherwise, see forms.ActivateTOTPForm)."""
    clear_totp_secret(request)
    return redirect("mfa_activate_totp")


@require("audit.view")
def sign_in_activity(request: HttpRequest) -> HttpResponse:
    """Members' sign-ins, wrong passwords and codes, pauses and alerts: the audit entries
    an owner looks for after a sign-in alert, without the rest of the log."""
    rows = AuditEntry.objects.filter(
        org=request.org,  # type: ignore[attr-defined]
        action__in=SIGN_IN_ACTIONS,
    ).order_by("-seq")
    page = Paginator(rows, ACTIVITY_PAGE_SIZE).get_page(request.GET.get("page"))
    entries = [(e, SIGN_IN_ACTIONS[e.action], _until(e)) for e in page]
    return render(request, "accounts/sign_in_activity.html", {"page": page, "entries": entries})


def _until(entry: AuditEntry) -> datetime | None:
    """When a pause recorded in `entry` ends (stored as ISO text in the audit data)."""
    raw = entry.data.get("until") if isinstance(entry.data, dict) else None
    return datetime.fromisoformat(raw) if raw else None
