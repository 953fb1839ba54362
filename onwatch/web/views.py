from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views import defaults

from onwatch.alerts.services import channel_count, recent_deliveries
from onwatch.core.decorators import public, require
from onwatch.core.models import AuditEntry, Job, Membership
from onwatch.core.network import is_loopback
from onwatch.core.roles import has_permission
from onwatch.uptime.services import summary as uptime_summary


@require("dashboard.view")
def dashboard(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    role = request.membership.role  # type: ignore[attr-defined]
    jobs = Job.objects.filter(org=org) | Job.objects.filter(org=None)
    ctx = {
        "channels": channel_count(org),
        "deliveries": recent_deliveries(org, 5),
        "job_states": dict(
            jobs.values_list("state").annotate(n=Count("id")).values_list("state", "n")
        ),
        "recent_jobs": jobs.order_by("-created_at", "-id")[:5],
        "members": Membership.objects.filter(org=org).count(),
        # From the monitors' state columns and the incidents: never the raw results.
        "uptime": uptime_summary(org) if has_permission(role, "monitors.view") else None,
        "audit": (
            AuditEntry.objects.filter(org=org)[:5] if has_permission(role, "audit.view") else None
        ),
    }
    return render(request, "web/dashboard.html", ctx)


@public("load balancers and `onwatch up` ask whether the web process answers")
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's handler400 (no permission check: it answers requests no view was chosen
    for). A Host onwatch does not answer to says which one it does and how to change it,
    instead of a bare "Bad Request" — to someone on this machine only: the address and
    settings of an installation are nobody else's business."""
    if not isinstance(exception, DisallowedHost):
        return defaults.bad_request(request, exception)
    # REMOTE_ADDR is the client's own: the web server takes X-Forwarded-For from trusted
    # proxies only (ONWATCH_TRUSTED_PROXIES), so a local Caddy does not make all local.
    if not is_loopback(request.META.get("REMOTE_ADDR", "")):
        return defaults.bad_request(request, exception)
    asked = request.META.get("HTTP_HOST", "")
    return HttpResponseBadRequest(
        f"This onwatch answers at {settings.SITE_ROOT}, not at {asked}. To use this "
        "address, set ONWATCH_BASE_URL to it (or add the name to ONWATCH_ALLOWED_HOSTS) "
        "and restart onwatch.\n",
        content_type="text/plain; charset=utf-8",
    )
