"""The JSON API, v1: core's views for scripts and dashboards, each behind one token scope
(reading, and cancelling a job other than an alert delivery). Other apps serve their own
(alerts: api/v1/channels/).

Nothing secret leaves through it: channels are listed without their URLs, jobs without
their payloads (a payload may name what a job acts on, the log and error say what happened).
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from onwatch.core import jobs as jobs_
from onwatch.core import services
from onwatch.core.audit import Actor
from onwatch.core.decorators import api, api_error
from onwatch.core.models import AuditEntry, Job, JobState, Membership, SshKey
from onwatch.core.pushkeys import KeyFileError

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


def _limit(request: HttpRequest) -> int | None:
    """The `limit` parameter, 1..MAX_LIMIT, or None when it is not a number in range."""
    raw = request.GET.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        return None
    return int(raw)


def _bad_limit() -> JsonResponse:
    return api_error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")


def _jobs(request: HttpRequest) -> QuerySet[Job]:
    return Job.objects.filter(Q(org=request.org) | Q(org=None))  # type: ignore[attr-defined]


def _job(job: Job, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "install_wide": job.org_id is None,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": job.progress,
        "queue": job.queue,
        "after": job.after_id,
    }
    if full:
        # Its lines, as they are appended: a running job's log so far.
        out |= {"log": job.log, "error": job.error, "result": job.result}
    return out


@api("jobs:read")
@require_GET
def jobs(request: HttpRequest) -> JsonResponse:
    limit = _limit(request)
    if limit is None:
        return _bad_limit()
    rows = _jobs(request).order_by("-created_at", "-id")
    state = request.GET.get("state")
    if state is not None:
        if state not in JobState.values:
            return api_error(400, f"state must be one of {', '.join(JobState.values)}")
        rows = rows.filter(state=state)
    return JsonResponse({"jobs": [_job(j) for j in rows[:limit]]})


@api("jobs:read")
@require_GET
def job(request: HttpRequest, pk: int) -> JsonResponse:
    found = _jobs(request).filter(pk=pk).first()
    if found is None:
        return api_error(404, f"No job {pk} in this organization; list them at /api/v1/jobs/")
    return JsonResponse(_job(found, full=True))


@api("jobs:cancel")
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> JsonResponse:
    """Queued: cancelled at once. Running: its worker stops it within seconds (state
    stays running until then; poll the job). Ended: 409."""
    found = Job.objects.filter(org=request.org, pk=pk).first()  # type: ignore[attr-defined]
    if found is None:
        return api_error(404, f"No job {pk} of this organization; list them at /api/v1/jobs/")
    if jobs_.sends_alerts(found):
        # A token does only what its scopes say, and no scope stands for silencing an
        # outage notice: a leaked jobs:cancel token must not be able to. People who may
        # manage channels stop a stuck delivery on its page or with the CLI.
        return api_error(
            403,
            f"job #{pk} sends an alert, and the API never cancels one; someone who may "
            f"manage alert channels can cancel it on its page or with "
            f"`onwatch jobs cancel {pk} --alerts-too`",
        )
    try:
        done = jobs_.cancel(found, request.user.get_username(), request)
    except jobs_.NotCancellable as e:
        return api_error(409, str(e))
    return JsonResponse(_job(done) | {"cancel_requested_by": done.cancel_requested_by})


@api("audit:read")
@require_GET
def audit(request: HttpRequest) -> JsonResponse:
    """Newest first; pass `before=<seq>` from the last entry to read the next page."""
    limit = _limit(request)
    if limit is None:
        return _bad_limit()
    rows = AuditEntry.objects.filter(org=request.org).order_by("-seq")  # type: ignore[attr-defined]
    before = request.GET.get("before")
    if before is not None:
        if not before.isdigit():
            return api_error(400, "before must be the seq number of an audit entry")
        rows = rows.filter(seq__lt=int(before))
    fields = ("seq", "at", "actor", "action", "target", "ip", "data")
    return JsonResponse({"entries": list(rows.values(*fields)[:limit])})


def _me(request: HttpRequest) -> Any:
    member: Membership = request.membership  # type: ignore[attr-defined]
    return member.user


def _ssh_key(key: SshKey) -> dict[str, Any]:
    return {
        "id": key.pk,
        "name": key.name,
        "public_key": key.public_key,
        "fingerprint": key.fingerprint,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
    }


@api("sshkeys:write")
def ssh_keys(request: HttpRequest) -> JsonResponse:
    """The token owner's own SSH keys (GET), or add one (POST {"key": "...", "name": ""})."""
    if request.method == "GET":
        own = SshKey.objects.filter(user=_me(request))
        return JsonResponse({"ssh_keys": [_ssh_key(k) for k in own]})
    if request.method != "POST":
        return api_error(405, "GET lists your SSH keys, POST adds one")
    try:
        body = json.loads(request.body or b"{}")
        text, name = str(body["key"]), str(body.get("name") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return api_error(400, 'Send JSON: {"key": "ssh-ed25519 AAAA… you@laptop", "name": ""}')
    try:
        key = services.add_ssh_key(_me(request), text, name, Actor.of(request))
    except services.KeyRefused as e:
        return api_error(400, str(e))
    except KeyFileError as e:
        return api_error(500, f"The key is saved, but {e}")
    return JsonResponse(_ssh_key(key), status=201)


@api("sshkeys:write")
@require_POST
def ssh_key_remove(request: HttpRequest, pk: int) -> JsonResponse:
    key = SshKey.objects.filter(user=_me(request), pk=pk).first()
    if key is None:
        return api_error(404, f"You have no SSH key {pk}; list them at /api/v1/ssh-keys/")
    try:
        services.remove_ssh_key(key, Actor.of(request))
    except KeyFileError as e:
        return api_error(500, f"The key is removed from onwatch, but {e}")
    return JsonResponse({"removed": pk})
