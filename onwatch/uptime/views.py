"""Monitors: the list, one monitor's history and charts, and adding, changing, pausing and
removing them. Thin: uptime and charts come from rollups.py and charts.py, every change
goes through services.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from onwatch.alerts import incidents
from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.models import Organization
from onwatch.core.snapshot import one_snapshot
from onwatch.uptime import charts, pings, rollups, services, specs, state
from onwatch.uptime.forms import MonitorForm, initial_settings
from onwatch.uptime.models import CheckResult, Kind, Monitor, Ping, State
from onwatch.uptime.services import state_counts

PAGE_SIZE = 50
CHANGES_SHOWN = 20
PINGS_SHOWN = 20
CHECKS_SHOWN = 20
BAR_DAYS = 90
DAY, MONTH = timedelta(hours=24), timedelta(days=30)
LIST_COLUMNS = (
    "id",
    "name",
    "kind",
    "state",
    "state_since",
    "last_checked_at",
    "last_latency_ms",
    "last_ping_at",
    "warning",
    "cert_expires_at",
)


def _org(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


def _monitor(request: HttpRequest, pk: int) -> Monitor:
    # Scoped to the member's organization: another organization's monitor is a 404.
    return get_object_or_404(
        Monitor.objects.select_related("parent", "policy"), pk=pk, org=_org(request)
    )


@require("monitors.view")
def monitor_list(request: HttpRequest) -> HttpResponse:
    org = _org(request)
    wanted = request.GET.get("state", "")
    chosen = wanted if wanted in State.values else ""
    query = request.GET.get("q", "").strip()[:100]
    rows = Monitor.objects.filter(org=org).only(*LIST_COLUMNS)
    if chosen:
        rows = rows.filter(state=chosen)
    if query:
        rows = rows.filter(name__icontains=query)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    ctx = {
        "page": page,
        "rows": list_rows(list(page), timezone.now()),
        "counts": state_counts(org),
        "state": chosen,
        "q": query,
        "can_manage": can(request, "monitors.manage"),
    }
    return render(request, "uptime/list.html", ctx)


def list_rows(monitors: list[Monitor], now: datetime) -> list[dict[str, Any]]:
    """Each monitor of a page with its 24 h and 30 d uptime: three queries for the page
    (rollups twice, and the raw results of the hours not rolled up yet), however long the
    list."""
    ids = [m.pk for m in monitors]
    day, month = rollups.uptime_spans(ids, [now - DAY, now - MONTH], now)
    return [
        {
            "m": m,
            "day": charts.percent_text(day[m.pk]),
            "day_level": charts.level(day[m.pk]),
            "month": charts.percent_text(month[m.pk]),
            "month_level": charts.level(month[m.pk]),
        }
        for m in monitors
    ]


@require("monitors.view")
def monitor_detail(request: HttpRequest, pk: int) -> HttpResponse:
    # One snapshot and one `now` for every read: the figures, the state and the checks
    # listed agree, however many checks land while the page is put together.
    with one_snapshot():
        m = _monitor(request, pk)
        now = timezone.now()
        ctx: dict[str, Any] = {
            "m": m,
            "target": describe(m),
            "uptime": uptimes(m, now),
            "changes": [(c, evidence_of(c.evidence)) for c in m.changes.all()[:CHANGES_SHOWN]],
            "incident": incidents.current(m.org, state.source(m)),
            "can_manage": can(request, "monitors.manage"),
            **chart_context(m, now),
        }
        if m.kind == Kind.HEARTBEAT:
            ctx.update(heartbeat_context(m, now))
        else:
            ctx.update(checks_context(m, now))
    return render(request, "uptime/detail.html", ctx)


def checks_context(m: Monitor, now: datetime) -> dict[str, Any]:
    """The last checks one by one: failures that did not reach the down threshold show
    here, so a service that flaps does not look healthy. Up to `now`, as the figures."""
    found = CheckResult.objects.filter(monitor=m, at__lt=now).order_by("-at", "-id")
    recent = list(found[:CHECKS_SHOWN])
    return {"checks": recent, "checks_failed": sum(not r.ok for r in recent)}


def uptimes(m: Monitor, now: datetime) -> list[tuple[str, str, str]]:
    found = []
    for label, span in (("24 hours", DAY), ("30 days", MONTH), ("90 days", BAR_DAYS * DAY)):
        value = rollups.uptime_percent(m, now - span, now)
        found.append((label, charts.percent_text(value), charts.level(value)))
    return found


def chart_context(m: Monitor, now: datetime) -> dict[str, Any]:
    days = list(rollups.day_starts(now - (BAR_DAYS - 1) * DAY, now))
    daily = rollups.series(m, days[0], now, rollups.DAY)
    # One read of 30 days of hours serves both charts.
    month_start = rollups.floor_hour(now - MONTH)
    hourly = rollups.series(m, month_start, now)
    day_start = rollups.floor_hour(now - DAY)
    hour = timedelta(hours=1)
    return {
        "bars": charts.uptime_bars(days, daily, f"Uptime of {m.name} per day, last 90 days"),
        "chart_day": charts.response_times(
            [p for p in hourly if p.start >= day_start],
            day_start,
            now,
            hour,
            f"Response time of {m.name}, last 24 hours",
            time_format="%Y-%m-%d %H:%M",
        ),
        "chart_month": charts.response_times(
            hourly,
            month_start,
            now,
            hour,
            f"Response time of {m.name}, last 30 days",
            time_format="%Y-%m-%d",
        ),
    }


def describe(m: Monitor) -> list[tuple[str, str]]:
    """What the monitor checks, for people. Built from the readers' copy of the settings
    for everyone who opens the page: a password in the URL, header values and a request
    body often hold credentials, and this page is open to viewers (managers see them in
    the form)."""
    c = specs.for_readers(m.kind, m.config)
    if m.kind == Kind.HTTP:
        rows = [("URL", f"{c.get('method', 'GET')} {c.get('url', '')}")]
        if c.get("headers"):
            rows.append(("Headers", ", ".join(sorted(c["headers"]))))
        rows += [(label, str(c[k])) for k, label in HTTP_FACTS if k in c]
        return rows
    if m.kind == Kind.TCP:
        return [("Host", f"{c.get('host', '')}:{c.get('port', '')}")]
    if m.kind == Kind.DNS:
        rows = [("Name", f"{c.get('record_type', 'A')} {c.get('name', '')}")]
        return rows + [(label, str(c[k])) for k, label in DNS_FACTS if k in c]
    if m.kind == Kind.TLS:
        return [("Host", f"{c.get('host', '')}:{c.get('port', 443)}")]
    return [("Schedule", schedule_text(c))]


HTTP_FACTS = (
    ("accepted_status_codes", "Accepted status"),
    ("keyword", "Must contain"),
    ("keyword_absent", "Must not contain"),
    ("regex", "Must match"),
    ("regex_absent", "Must not match"),
    ("json_path", "JSON path"),
    ("json_expected", "Expected there"),
    ("max_latency_ms", "Latency limit (ms)"),
)
DNS_FACTS = (("expected", "Expected"), ("nameserver", "Name server"))


def schedule_text(c: dict[str, Any]) -> str:
    if c.get("cron"):
        when = f"cron {c['cron']} ({c.get('tz', 'UTC')})"
    else:
        when = f"every {c.get('period', 86400)} s"
    return f"{when}, {c.get('grace', 3600)} s grace"


def evidence_of(evidence: dict[str, Any]) -> dict[str, Any]:
    """A state change's proof, split for the page: the usual facts, the body excerpt, and
    whatever else the check found (certificate days left, DNS answers, ...)."""
    usual = ("ok", "status", "latency_ms", "error", "error_full", "body")
    return {
        "status": evidence.get("status"),
        "latency_ms": evidence.get("latency_ms"),
        "error": evidence.get("error", ""),
        "error_full": evidence.get("error_full", ""),
        "body": evidence.get("body", ""),
        "other": sorted((k, v) for k, v in evidence.items() if k not in usual),
    }


def heartbeat_context(m: Monitor, now: datetime) -> dict[str, Any]:
    root = settings.SITE_ROOT
    urls = [root + reverse("ping", kwargs={"code": str(m.ping_id)})]
    if m.slug:
        key = pings.ping_key(m.org)
        urls.append(root + reverse("ping-slug", kwargs={"key": key, "slug": m.slug}))
    recent = Ping.objects.filter(monitor=m, at__lt=now).order_by("-at", "-id")[:PINGS_SHOWN]
    return {"ping_urls": urls, "pings": list(recent)}


# --- adding and changing ------------------------------------------------------------------


@require("monitors.manage")
def monitor_add(request: HttpRequest) -> HttpResponse:
    """Pick a kind first: the form then shows only that kind's settings (no JavaScript)."""
    kinds = [(value, label, KIND_HELP[value]) for value, label in Kind.choices]
    return render(request, "uptime/add.html", {"kinds": kinds})


KIND_HELP: dict[str, str] = {
    Kind.HTTP: "a web address answers as expected, in time",
    Kind.TCP: "a port accepts connections",
    Kind.DNS: "a name resolves, to the expected answer",
    Kind.TLS: "a certificate is valid and not about to expire",
    Kind.HEARTBEAT: "a cron job or script pings onwatch on schedule",
}


@require("monitors.manage")
def monitor_add_kind(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in Kind.values:
        raise Http404("no such kind of monitor")
    return _monitor_form(request, kind, None)


@require("monitors.manage")
def monitor_edit(request: HttpRequest, pk: int) -> HttpResponse:
    m = _monitor(request, pk)
    return _monitor_form(request, m.kind, m)


def _initial(m: Monitor | None) -> dict[str, Any] | None:
    if m is None:
        return None
    common = {n: getattr(m, n) for n in ("name", "slug", *FORM_NUMBERS)}
    return {
        **common,
        "parent": m.parent_id,
        "policy": m.policy_id,
        **initial_settings(m.kind, m.config),
    }


FORM_NUMBERS = ("interval", "retry_interval", "timeout", "confirmations")


def _monitor_form(request: HttpRequest, kind: str, m: Monitor | None) -> HttpResponse:
    org = _org(request)
    data = request.POST if request.method == "POST" else None
    form = MonitorForm(data, org=org, kind=kind, monitor=m, initial=_initial(m))
    if data is not None and form.is_valid():
        try:
            saved = _save(request, m, form.cleaned_data["input"])
        except services.Refusal as e:
            # Checked by the form a moment ago; something changed in between.
            form.refused(e, form.cleaned_data["input"].fields.config)
        else:
            messages.success(request, f"Monitor {saved.name} saved.")
            return redirect("monitor_detail", pk=saved.pk)
    ctx = {"form": form, "m": m, "kind": kind, "kind_label": Kind(kind).label}
    return render(request, "uptime/form.html", ctx)


def _save(request: HttpRequest, m: Monitor | None, data: services.MonitorInput) -> Monitor:
    if m is None:
        return services.add_monitor(_org(request), data, Actor.of(request))
    services.change_monitor(m, data, Actor.of(request))
    return m


@require("monitors.manage")
@require_POST
def monitor_pause(request: HttpRequest, pk: int) -> HttpResponse:
    m = _monitor(request, pk)
    if services.pause_monitor(m, Actor.of(request)):
        messages.success(request, f"{m.name} is paused: no checks and no alerts until resumed.")
    else:
        messages.error(request, f"{m.name} is paused already; nothing to do.")
    return redirect("monitor_detail", pk=pk)


@require("monitors.manage")
@require_POST
def monitor_resume(request: HttpRequest, pk: int) -> HttpResponse:
    m = _monitor(request, pk)
    if services.resume_monitor(m, Actor.of(request)):
        waits = "waits for its next ping" if m.kind == Kind.HEARTBEAT else "is checked at once"
        messages.success(request, f"{m.name} is resumed and {waits}.")
    else:
        messages.error(request, f"{m.name} is not paused; nothing to do.")
    return redirect("monitor_detail", pk=pk)


@require("monitors.manage")
@require_POST
def monitor_delete(request: HttpRequest, pk: int) -> HttpResponse:
    m = _monitor(request, pk)
    services.remove_monitor(m, Actor.of(request))
    messages.success(request, f"Monitor {m.name} removed, with its history.")
    return redirect("monitors")
