from __future__ import annotations

from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from onwatch.accounts.forms import AcceptInviteForm
from onwatch.accounts.services import accept_invite
from onwatch.core.decorators import public
from onwatch.core.models import Invite, hash_token


@public("one-time invite links create accounts; the token is the credential")
@never_cache
def invite(request: HttpRequest, token: str) -> HttpResponse:
    found = Invite.objects.filter(token_hash=hash_token(token)).select_related("org").first()
    if found is None or not found.usable:
        raise Http404("This link has been used or has expired; ask for a new one.")
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
        except ValueError as e:
            raise Http404(str(e)) from e
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # Straight on to the second factor: nothing else is reachable without it.
        return redirect("mfa_activate_totp")
    return render(request, "accounts/invite.html", {"form": form, "invite": found})
