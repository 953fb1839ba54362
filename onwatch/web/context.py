"""The navigation: each section appears once it exists and the member may see it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from onwatch.core.network import through_unnamed_proxy
from onwatch.core.roles import has_permission

# (label, url name, permission). Later sections (uptime, backups, deploys, errors, logs,
# security) add a row here when they land, never before.
SECTIONS = [
    ("Dashboard", "dashboard", "dashboard.view"),
    ("Alert channels", "channels", "channels.view"),
    ("Deliveries", "deliveries", "channels.view"),
    ("Monitors", "monitors", "monitors.view"),
    ("Incidents", "incidents", "incidents.view"),
    ("Escalation policies", "policies", "incidents.view"),
    ("Maintenance", "maintenance", "incidents.view"),
    ("Status pages", "status_pages", "statuspages.manage"),
    ("Backups", "backups", "backups.view"),
    ("Services", "services", "services.view"),
    ("Hosts", "hosts", "hosts.view"),
    ("Errors", "errors_projects", "errors.view"),
    ("Jobs", "jobs", "jobs.view"),
    ("Members", "members", "members.view"),
    ("API tokens", "tokens", "tokens.manage"),
    ("Audit log", "audit_log", "audit.view"),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    if membership is None:
        return {"nav": []}
    items = []
    for label, name, permission in SECTIONS:
        if has_permission(membership.role, permission):
            url = reverse(name)
            items.append({"label": label, "url": url, "active": request.path == url})
    return {"nav": items}


def plain_http(request: HttpRequest) -> dict[str, Any]:
    """The owner chose plain HTTP on their network: every page, signed in or not, says what
    that costs for as long as it lasts."""
    return {"plain_http": settings.PLAIN_HTTP}


def unnamed_proxy(request: HttpRequest) -> dict[str, Any]:
    """Behind a proxy nobody named, every visitor looks like the proxy: sign-in limits
    count them all as one and the audit log records no one's address. Every page says so
    (signed in or not: the sign-in page is where the limits bite) until it is named."""
    found = through_unnamed_proxy(request.META, settings.TRUSTED_PROXIES, settings.DOMAIN)
    return {"unnamed_proxy": found}
