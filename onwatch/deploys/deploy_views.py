"""A service's domain, "deploy this commit", rollback, and a deploy's page (its timeline:
what ran when, how long, ok or not, and why). Thin: every change goes through services.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.rest import org_of
from onwatch.deploys import releases, services, watch
from onwatch.deploys.forms import WatchForm
from onwatch.deploys.models import (
    ENDED,
    Deploy,
    DeployKind,
    Host,
    Release,
    ReleaseState,
    Service,
    State,
    Watch,
    WatchState,
)
from onwatch.deploys.services import Refusal

DEPLOYS_SHOWN = 10


def _service(request: HttpRequest, pk: int) -> Service:
    return get_object_or_404(Service, pk=pk, org=org_of(request))


def context(request: HttpRequest, service: Service) -> dict[str, Any]:
    """The service page's part about its domain, releases and deploys."""
    refused = request.session.pop(hosts_refused_key(service.pk), None) or ["", ""]
    live = services.live_release(service)
    kept = list(service.releases.order_by("-pk"))
    notes = services.rolled_back_notes(service)
    return {
        "releases": kept,
        # Each with what a watch said of it, what it answered while it served (the
        # baseline of a release after it), and why it cannot be made live again, if not.
        "release_rows": [
            (r, notes.get(r.pk, ""), watch.tally_said(r), live_again_refused(service, r, live))
            for r in kept
        ],
        "live_release": live,
        "previous_release": services.previous_release(service),
        "rollback_refused": rollback_refused(service),
        "site_url": site_url(service.domain) if service.domain else "",
        "deploy_rows": [
            (d, served_badly(getattr(d, "watch", None)))
            for d in service.deploys.select_related("release", "watch")[:DEPLOYS_SHOWN]
        ],
        "can_deploy": can(request, "deploys.run"),
        "ready": ReleaseState.READY,
        "where": where_rows(service),
        "on_hosts": any(not p.host.local for p in services.placements(service)),
        "host_names": ", ".join(p.host.name for p in services.placements(service)),
        # What a refused "Save the hosts" was given, and why it was refused.
        **dict(zip(("hosts_typed", "hosts_error"), refused, strict=True)),
        "org_hosts": ", ".join(Host.objects.filter(org=service.org).values_list("name", flat=True)),
    }


def hosts_refused_key(pk: int) -> str:
    return f"hosts-refused-{pk}"


def where_rows(service: Service) -> list[dict[str, Any]]:
    """Each host with what serves there and where people reach it: an SSH host answers
    through its own Caddy, not onwatch's (the page linked this machine's, which served
    nothing of a service on SSH hosts only)."""
    hosts = {p.host.name: p.host for p in services.placements(service)}
    rows = []
    for w in releases.where_it_runs(service):
        host = hosts.get(w.host)
        local = host is None or host.local
        rows.append(
            {
                "host": w.host,
                "serving": w.serving,
                "seen_at": w.seen_at,
                "url": address(service.domain, None if local else host),
                "local": local,
            }
        )
    return rows


def address(domain: str, host: Host | None) -> str:
    """Where people reach the service on a host (None: this machine); empty without a
    domain."""
    if not domain:
        return ""
    return site_url(domain) if host is None else host_url(domain, host)


def host_url(domain: str, host: Host) -> str:
    """Where the host's Caddy answers for `domain`, its port shown when not the usual one."""
    https = host.caddy_https
    port, usual = (host.https_port, 443) if https else (host.http_port, 80)
    return f"{'https' if https else 'http'}://{domain}{'' if port == usual else f':{port}'}/"


def site_url(domain: str) -> str:
    """Where people open the service through onwatch's Caddy: its scheme, and its port
    when not the usual one (the page named the domain alone, on a machine whose Caddy
    listens on other ports)."""
    https = settings.CADDY_HTTPS
    port, usual = (settings.CADDY_HTTPS_PORT, 443) if https else (settings.CADDY_HTTP_PORT, 80)
    return f"{'https' if https else 'http'}://{domain}{'' if port == usual else f':{port}'}/"


def served_badly(its_watch: Watch | None) -> str:
    """What users felt of a release its watch rolled back: the switch alone read "0 failed
    requests", while the release went on answering errors until onwatch found it worse.
    The watch counts from going live (watch.py), the switch's answers among them."""
    if its_watch is None or its_watch.state != WatchState.ROLLED_BACK:
        return ""
    live = its_watch.deploy.switched_at or its_watch.started_at
    found = its_watch.detected_at or its_watch.ended_at
    took = f" ({watch.span_text((found - live).total_seconds())})" if found else ""
    return (
        f"from going live until onwatch found it worse{took}, it answered "
        f"{its_watch.errors:,} of {its_watch.requests:,} requests with errors (5xx), those "
        "during the switch included; then onwatch rolled it back"
    )


def live_again_refused(service: Service, release: Release, live: Release | None) -> str:
    """Why "Make live again" would be refused for a kept release, said beside it instead of
    the button (empty: offered). Walked: it was offered for a release never built on a
    host added since, and the rollback then failed there."""
    if release.state != ReleaseState.READY or release == live:
        return ""
    try:
        services.rollback_target(service, release.pk)
    except Refusal as e:
        return str(e).removeprefix(f"Cannot roll back to {release.label}: ")
    return ""


def rollback_refused(service: Service) -> str:
    """Why "Roll back" (to the release before) would be refused now; empty when it would not."""
    try:
        services.rollback_target(service, None)
    except Refusal as e:
        return str(e)
    return ""


@require("services.manage")
@require_POST
def service_domain(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    domain = request.POST.get("domain", "")
    auto = request.POST.get("auto_deploy") == "on"
    try:
        services.set_domain(service, domain, auto, Actor.of(request))
    except Refusal as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{service.name} answers at {domain}" if domain else "Saved.")
    return redirect("service_detail", pk=pk)


@require("services.manage")
@require_POST
def service_watch(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    form = WatchForm(request.POST)
    if not form.is_valid():
        field, [problem, *_] = next(iter(form.errors.items()))
        messages.error(request, f"{form.fields[field].label}: {problem}")
        return redirect("service_detail", pk=pk)
    rule = form.cleaned_data
    try:
        services.set_watch(
            service,
            rule["seconds"],
            rule["min_requests"],
            rule["error_percent"],
            rule["error_factor"],
            Actor.of(request),
            latency_factor=rule["latency_factor"],
            latency_ms=rule["latency_ms"],
        )
    except Refusal as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"Saved: {services.watch_rule(service)}.")
    return redirect("service_detail", pk=pk)


@require("services.manage")
@require_POST
def service_hosts(request: HttpRequest, pk: int) -> HttpResponse:
    """The hosts, comma-separated in deploy order; empty: this machine only."""
    service = _service(request, pk)
    names = [n.strip() for n in request.POST.get("hosts", "").split(",") if n.strip()]
    try:
        chosen = services.hosts_named(service.org, names)
        left = services.set_service_hosts(service, chosen, Actor.of(request), look=True)
    except Refusal as e:
        # Beside the form, with what was typed, to be mended rather than typed again: the
        # page opens at the form, below where messages show.
        request.session[hosts_refused_key(pk)] = [request.POST.get("hosts", ""), str(e)]
        return redirect(f"{reverse('service_detail', args=[pk])}#deploy-setup")
    else:
        for line in left:
            messages.warning(request, line)
        said = ", then ".join(names) if names else "this machine only"
        messages.success(request, f"{service.name} runs on {said}; its next deploy goes there.")
    return redirect("service_detail", pk=pk)


@require("deploys.run")
@require_POST
def service_deploy(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    try:
        deploy = services.queue_deploy(
            service,
            Actor.of(request),
            "ui",
            commit=request.POST.get("commit", "").strip(),
            skip_backup=bool(request.POST.get("skip_backup")),
        )
    except Refusal as e:
        messages.error(request, str(e))
        return redirect("service_detail", pk=pk)
    messages.success(request, f"Deploy #{deploy.pk} is queued.")
    return redirect("deploy_detail", pk=deploy.pk)


@require("deploys.run")
@require_POST
def service_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    chosen = request.POST.get("to", "").strip()
    try:
        to = int(chosen) if chosen else None
        deploy = services.queue_rollback(service, Actor.of(request), "ui", to=to)
    except services.OnItsWay as e:  # a second click, a stale tab: the one on its way
        messages.info(request, str(e))
        return redirect("deploy_detail", pk=e.deploy.pk)
    except ValueError as e:  # Refusal is one too
        messages.error(request, str(e) if isinstance(e, Refusal) else "Choose a kept release")
        return redirect("service_detail", pk=pk)
    messages.success(request, f"Rollback #{deploy.pk} is queued.")
    return redirect("deploy_detail", pk=deploy.pk)


@require("services.view")
def deploy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    found = Deploy.objects.select_related("service", "release", "pipeline", "job")
    deploy = get_object_or_404(found, pk=pk, service__org=org_of(request))
    return render(request, "deploys/deploy.html", {"deploy": deploy, **deploy_facts(deploy)})


# A deploy or its watch still going on: its page reloads by itself this often.
REFRESH_SECONDS = 3


def deploy_facts(deploy: Deploy) -> dict[str, Any]:
    """What a person reading a deploy's page asks next: how its watch ended (and the
    rollback and incident it led to), which watch asked for a rollback, what serves now."""
    its_watch = Watch.objects.filter(deploy=deploy).select_related("rollback").first()
    going_on = deploy.state not in ENDED or (
        its_watch is not None and its_watch.state in (WatchState.WATCHING, WatchState.ROLLING_BACK)
    )
    return {
        "watch": its_watch,
        "watch_said": watch.said(its_watch) if its_watch else unwatched(deploy),
        "served_badly": served_badly(its_watch),
        "incident_page": watch.incident_page(its_watch) if its_watch else "",
        "asked_by": Watch.objects.filter(rollback=deploy).select_related("deploy").first(),
        "live_now": services.live_release(deploy.service),
        # Several hosts: what serves on each, as its service's page shows it.
        "where": where_rows(deploy.service) if services.placements(deploy.service) else [],
        "switched_back": switched_back(deploy),
        "everywhere": live_everywhere(deploy),
        "refresh": REFRESH_SECONDS if going_on else 0,
        "timeline": [timeline_row(step, deploy.state) for step in deploy.steps],
    }


def live_everywhere(deploy: Deploy) -> str:
    """On several hosts, switched in turn: when the last went live too ("Went live" is the
    first's), and for a watch's rollback how long after it found the release worse."""
    last, first = deploy.all_live_at, deploy.switched_at
    if deploy.state != State.SUCCEEDED or last is None or first is None:
        return ""
    later = (last - first).total_seconds()
    said = f"on every host {later:.1f} s later, at {last:%H:%M:%S} UTC" if later else ""
    asked_by = Watch.objects.filter(rollback=deploy).first()
    if asked_by is None or asked_by.detected_at is None:
        return said
    found = (last - asked_by.detected_at).total_seconds()
    restored = f"serving again {found:.1f} s after the watch found the release worse"
    return f"{said}, {restored}" if said else restored


def switched_back(deploy: Deploy) -> dict[str, str]:
    """The hosts a deploy that did not succeed had switched and sent back ("back"), and
    those where going back failed ("failed": its release may serve there still): its "went
    live" alone read as if its release served."""
    if deploy.state == State.SUCCEEDED or deploy.switched_at is None:
        return {}
    prefix = "switch back on "
    back = [s for s in deploy.steps if s.get("name", "").startswith(prefix)]
    hosts = {
        ok: [s["name"][len(prefix) :] for s in back if bool(s.get("ok")) == ok]
        for ok in (True, False)
    }
    return {"back": ", ".join(hosts[True]), "failed": ", ".join(hosts[False])} if back else {}


def timeline_row(step: dict[str, Any], state: str) -> dict[str, Any]:
    """A step as its page shows it: its start a time (stored in UTC, shown in the zone the
    page names), its result as the API and the command line say it."""
    started = datetime.fromisoformat(step["started"]) if step.get("started") else None
    return step | {"started": started, "result": services.step_result(step, state)}


@require("deploys.run")
@require_POST
def release_no_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    release = get_object_or_404(Release, pk=pk, service__org=org_of(request))
    on = request.POST.get("on") != "off"
    try:
        services.mark_no_rollback_past(release, request.POST.get("why", ""), Actor.of(request), on)
    except Refusal as e:
        messages.error(request, str(e))
    return redirect("service_detail", pk=release.service_id)


def unwatched(deploy: Deploy) -> str:
    """Why a deploy that made its release live has no watch; empty when that needs no word."""
    if deploy.kind != DeployKind.DEPLOY or deploy.state != State.SUCCEEDED:
        return ""
    if not deploy.service.watch_seconds:
        return "none: the service's releases are not watched (its watch is set to 0 s)"
    earlier = deploy.service.deploys.filter(state=State.SUCCEEDED, pk__lt=deploy.pk)
    if not earlier.exists():
        return "none: the service's first release has nothing before it to compare with"
    return ""
