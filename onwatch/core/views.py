"""Members, API tokens, the audit log and background jobs: the pages of least privilege."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from onwatch.core import access, audit, logpages, logstream, services
from onwatch.core import jobs as jobqueue
from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.forms import InviteForm, RoleForm, TokenForm
from onwatch.core.models import (
    ENDED,
    ApiToken,
    AuditEntry,
    Invite,
    Job,
    JobState,
    Membership,
    Schedule,
    SshKey,
)
from onwatch.core.pushkeys import KeyFileError, remote
from onwatch.core.roles import has_permission, roles_grantable_by
from onwatch.core.services import MemberError

AUDIT_PAGE_SIZE = 50
JOBS_PAGE_SIZE = 100
LOG_LINES_PER_ANSWER = 500


def _membership(request: HttpRequest) -> Membership:
    m: Membership = request.membership  # type: ignore[attr-defined]
    return m


def _member(request: HttpRequest, pk: int) -> Membership:
    # Scoped to the member's organization: someone else's membership is a 404.
    return get_object_or_404(
        Membership.objects.select_related("user", "org"), pk=pk, org=_membership(request).org
    )


def _members_page(request: HttpRequest, **extra: object) -> HttpResponse:
    me = _membership(request)
    can_manage = has_permission(me.role, "members.manage")
    ctx = {
        "members": Membership.objects.filter(org=me.org)
        .select_related("user")
        .order_by("created_at", "id"),
        "me": me,
        "can_manage": can_manage,
        "grantable": roles_grantable_by(me.role),
        # Admins see no controls on owners' rows: only owners make or remove owners.
        "owners_too": has_permission(me.role, "org.manage"),
        "invites": Invite.objects.filter(
            org=me.org, used_at=None, expires_at__gt=timezone.now()
        ).order_by("-created_at")
        if can_manage
        else [],
        "invite_form": InviteForm(actor_role=me.role) if can_manage else None,
        **extra,
    }
    return render(request, "core/members.html", ctx)


@require("members.view")
def members(request: HttpRequest) -> HttpResponse:
    return _members_page(request)


@require("members.manage")
@require_POST
@never_cache
def member_invite(request: HttpRequest) -> HttpResponse:
    me = _membership(request)
    form = InviteForm(request.POST, actor_role=me.role)
    if not form.is_valid():
        return _members_page(request, invite_form=form)
    role, email = form.cleaned_data["role"], form.cleaned_data["email"]
    try:
        invite, raw = services.issue_invite(me, role, email, Actor.of(request))
    except MemberError as e:
        messages.error(request, str(e))
        return redirect("members")
    # Shown in this response only: the database keeps just the link's hash.
    link = settings.SITE_ROOT + reverse("invite", args=[raw])
    return _members_page(request, new_invite=invite, invite_link=link)


@require("members.manage")
@require_POST
def member_role(request: HttpRequest, pk: int) -> HttpResponse:
    target = _member(request, pk)
    form = RoleForm(request.POST, actor_role=_membership(request).role)
    if not form.is_valid():
        messages.error(request, "Pick one of the roles offered; yours cannot grant that one.")
        return redirect("members")
    new = form.cleaned_data["role"]
    try:
        old = services.change_role(_membership(request), target, new, Actor.of(request))
    except MemberError as e:
        messages.error(request, str(e))
        return redirect("members")
    if old != new:
        messages.success(request, f"{target.user.email} is now {new}.")
    return redirect("members")


@require("members.manage")
@require_POST
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    target = _member(request, pk)
    try:
        services.remove_member(_membership(request), target, Actor.of(request))
    except MemberError as e:
        messages.error(request, str(e))
        return redirect("members")
    messages.success(
        request, f"{target.user.email} is no longer a member; their tokens are revoked."
    )
    return redirect("members")


def _own_tokens(request: HttpRequest) -> QuerySet[ApiToken]:
    me = _membership(request)
    return ApiToken.objects.filter(user=me.user, org=me.org).order_by("-created_at", "-id")


@require("tokens.manage")
@never_cache
def tokens(request: HttpRequest) -> HttpResponse:
    me = _membership(request)
    form = TokenForm(request.POST or None, role=me.role)
    new = None
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        by = Actor.of(request)
        new = services.issue_token(me.user, me.org, d["name"], d["scopes"], d["days"], by)
        # The raw token is in this response only; a fresh form so it is not resubmitted.
        form = TokenForm(role=me.role)
    ctx = {"form": form, "new": new, "tokens": _own_tokens(request), "now": timezone.now()}
    return render(request, "core/tokens.html", ctx)


@require("tokens.manage")
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    # Only one's own tokens: anyone else's is a 404, not a 403, so ids reveal nothing.
    token = get_object_or_404(_own_tokens(request), pk=pk)
    if services.revoke_token(token, Actor.of(request)):
        messages.success(request, f"Token {token.name} revoked; it no longer works.")
    return redirect("tokens")


@require("sshkeys.manage")
def ssh_keys(request: HttpRequest) -> HttpResponse:
    """One's own SSH keys: add one (pasted), or remove one."""
    me = _membership(request).user
    if request.method == "POST":
        try:
            said = _change_ssh_keys(request, me)
        except (services.KeyRefused, KeyFileError) as e:
            messages.error(request, str(e)[:1].upper() + str(e)[1:])
        else:
            messages.success(request, said)
            return redirect("ssh_keys")
    ctx = {
        "keys": SshKey.objects.filter(user=me),
        "remote": remote(),
        "pasted": request.POST.get("key", ""),
    }
    return render(request, "core/ssh_keys.html", ctx)


def _change_ssh_keys(request: HttpRequest, me: Any) -> str:
    by = Actor.of(request)
    if "remove" in request.POST:
        # Only one's own: anyone else's is a 404, so ids reveal nothing.
        key = get_object_or_404(SshKey, user=me, pk=request.POST.get("remove") or 0)
        services.remove_ssh_key(key, by)
        return f"Key {key.name} removed; it no longer signs in."
    key = services.add_ssh_key(me, request.POST.get("key", ""), request.POST.get("name", ""), by)
    return f"Key {key.name} added: you can git push with it now."


@require("audit.view")
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.filter(org=_membership(request).org).order_by("-seq")
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    ctx = {"page": page, "unchecked": audit.unmarked_problem()}
    return render(request, "core/audit.html", ctx)


def org_jobs(request: HttpRequest) -> QuerySet[Job]:
    """The organization's jobs and the install-wide ones (org=None), which every member
    may see: they include the alert deliveries and self-checks everyone relies on."""
    return Job.objects.filter(Q(org=_membership(request).org) | Q(org=None))


@require("jobs.view")
def jobs(request: HttpRequest) -> HttpResponse:
    rows = org_jobs(request).order_by("-created_at", "-id")
    state = request.GET.get("state", "")
    if state in JobState.values:
        rows = rows.filter(state=state)
    else:
        state = ""
    page = Paginator(rows, JOBS_PAGE_SIZE).get_page(request.GET.get("page"))
    ctx = {"page": page, "state": state, "states": JobState.values, "coming": coming_up(request)}
    return render(request, "core/jobs.html", ctx)


def coming_up(request: HttpRequest) -> list[Schedule]:
    """What the scheduler will start next, for this organization and install-wide."""
    org = _membership(request).org
    found: list[Schedule] = list(
        Schedule.objects.filter(Q(org=org) | Q(org=None), enabled=True)
        .exclude(next_run_at=None)
        .order_by("next_run_at", "name")
    )
    return found


@require("jobs.view")
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(org_jobs(request), pk=pk)
    result = json.dumps(job.result, indent=2, sort_keys=True, default=str) if job.result else ""
    ctx = {
        "job": job,
        "result": result,
        "log": logpages.for_request(job, request.GET.dict()),
        "ended": job.state in ENDED,
        "can_cancel": can_cancel(request, job),
    }
    return render(request, "core/job.html", ctx)


def can_cancel(request: HttpRequest, job: Job) -> bool:
    # Install-wide jobs (deliveries for everyone, the weekly reclaim) are no one
    # organization's to stop.
    mine = job.org_id is not None and job.org_id == _membership(request).org_id
    asked = bool(job.cancel_requested_by)  # already being stopped
    allowed = can(request, "jobs.cancel") and (
        not jobqueue.sends_alerts(job) or can(request, "channels.manage")
    )
    return mine and not asked and job.state not in ENDED and allowed


@require("jobs.view")
def job_log(request: HttpRequest, pk: int) -> JsonResponse:
    """The log lines after `?after=<line id>`, for the page that follows a running job."""
    job = get_object_or_404(org_jobs(request), pk=pk)
    after = request.GET.get("after", "0")
    if not (after.isascii() and after.isdecimal() and len(after) <= 18):
        return JsonResponse({"error": "after must be the number of a log line"}, status=400)
    rows = list(
        job.log_lines.filter(id__gt=int(after))
        .order_by("id")
        .values_list("id", "text")[:LOG_LINES_PER_ANSWER]
    )
    more = len(rows) == LOG_LINES_PER_ANSWER
    return JsonResponse(
        {
            "lines": [text for _, text in rows],
            "after": rows[-1][0] if rows else int(after),
            "state": job.state,
            "ended": job.state in ENDED and not more,
        }
    )


@require("jobs.view")
def job_events(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The job's log lines after `Last-Event-ID` (a reconnecting browser) or `?after=`
    (the last line the page showed), as server-sent events (core/logstream.py)."""
    job = get_object_or_404(org_jobs(request), pk=pk)
    after = request.headers.get("Last-Event-ID") or request.GET.get("after", "0")
    if not (after.isascii() and after.isdecimal() and len(after) <= 18):
        return HttpResponse(
            "after (or Last-Event-ID) must be the number of a log line\n",
            status=400,
            content_type="text/plain",
        )
    # Asked again while the stream stays open, with what identifies the viewer now.
    allowed = partial(
        access.still_allowed,
        request.session.session_key,
        request.user.pk,
        _membership(request).org_id,
        "jobs.view",
    )
    response = StreamingHttpResponse(
        logstream.events(job.pk, int(after), allowed), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # nginx buffers a response unless told not to; Caddy passes event streams on at once.
    response["X-Accel-Buffering"] = "no"
    return response


@require("jobs.cancel")
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=pk, org=_membership(request).org)
    try:
        may = can(request, "channels.manage")
        done = jobqueue.cancel(job, request.user.get_username(), request, may_stop_alerts=may)
    except (jobqueue.NotCancellable, jobqueue.CancelForbidden) as e:
        messages.error(request, str(e))
    else:
        if done.state == JobState.CANCELLED:
            messages.success(request, f"Job #{job.pk} is cancelled; it will not run.")
        else:
            messages.success(request, f"Stopping job #{job.pk}; it ends within seconds.")
    return redirect("job_detail", pk=job.pk)
