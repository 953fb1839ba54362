"""Hosts: the list (this machine first), adding an SSH host, a host's page (its key to put
in authorized_keys, the pinned host key, the last check), checking and preparing it,
changing its details and removing it. Thin: services.py writes."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from pydantic import ValidationError

from onwatch.core import ssh
from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.models import Job, JobState
from onwatch.core.rest import org_of
from onwatch.deploys import hosts, services
from onwatch.deploys.forms import HostForm
from onwatch.deploys.models import Host
from onwatch.deploys.services import HostFields, Refusal

CHECK_REFRESH_SECONDS = 3
UNDER_WAY = (JobState.QUEUED, JobState.RUNNING)


def _host(request: HttpRequest, pk: int) -> Host:
    return get_object_or_404(Host, pk=pk, org=org_of(request))


@require("hosts.view")
def host_list(request: HttpRequest) -> HttpResponse:
    org = org_of(request)
    services.this_machine(org)
    found = Host.objects.filter(org=org).prefetch_related("placements__service")
    ctx = {"hosts": list(found), "can_manage": can(request, "hosts.manage")}
    return render(request, "deploys/hosts.html", ctx)


EDITABLE = (
    "provider",
    "monthly_cost",
    "currency",
    "allow_sudo",
    "caddy_https",
    *services.HOST_PORTS,
)


def _fields(form: HostForm, address: str) -> HostFields | None:
    # A field left empty keeps what the host has (its initial value), else the default.
    data = {k: form.initial.get(k) if v is None else v for k, v in form.cleaned_data.items()}
    data.pop("address", None)
    try:
        return HostFields(address=address, **{k: v for k, v in data.items() if v is not None})
    except ValidationError as e:
        form.add_error(None, e.errors()[0]["msg"])
    return None


def _add(request: HttpRequest, form: HostForm) -> Host | None:
    fields = _fields(form, form.cleaned_data["address"])
    if fields is None:
        return None
    try:
        return services.add_host(org_of(request), fields, Actor.of(request))
    except Refusal as e:
        form.add_error("address" if e.field == "address" else None, str(e))
    return None


@require("hosts.manage")
def host_add(request: HttpRequest) -> HttpResponse:
    form = HostForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and (host := _add(request, form)):
        messages.success(request, f"Added {host.name}; put onwatch's key on it, then check it.")
        return redirect("host_detail", pk=host.pk)
    ctx = {"form": form, "host": None, "providers": services.PROVIDERS}
    return render(request, "deploys/host_form.html", ctx)


@require("hosts.manage")
def host_edit(request: HttpRequest, pk: int) -> HttpResponse:
    host = _host(request, pk)
    initial = {n: getattr(host, n) for n in EDITABLE}
    form = HostForm(request.POST or None, initial=initial, adding=False)
    if request.method == "POST" and form.is_valid():
        fields = _fields(form, host.name)
        try:
            if fields:
                services.change_host(host, fields, Actor.of(request))
                messages.success(request, f"Saved {host.name}.")
                return redirect("host_detail", pk=host.pk)
        except Refusal as e:
            form.add_error(None, str(e))
    ctx = {"form": form, "host": host, "providers": services.PROVIDERS}
    return render(request, "deploys/host_form.html", ctx)


@require("hosts.view")
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    host = _host(request, pk)
    checks = Job.objects.filter(kind=services.HOST_CHECK_KIND, payload__host=host.pk)
    last_job = checks.order_by("-id").first()
    ctx: dict[str, Any] = {
        "host": host,
        "public_key": "" if host.local else services.host_key(host.org).public_key,
        "fingerprints": ssh.fingerprints(host.known_hosts),
        "last_job": last_job,
        # What runs here and which release serves it, as each deploy's end noted it.
        "placements": host.placements.select_related("service").order_by("service__name"),
        # A check under way: the page shows its result by itself (it said it would).
        "refresh": CHECK_REFRESH_SECONDS if last_job and last_job.state in UNDER_WAY else 0,
        "can_manage": can(request, "hosts.manage"),
        "clock": hosts.clock_said(host.name, host.clock_skew),
        "clock_off": hosts.clock_off(host.clock_skew),
    }
    return render(request, "deploys/host.html", ctx)


@require("hosts.manage")
@require_POST
def host_check(request: HttpRequest, pk: int) -> HttpResponse:
    host = _host(request, pk)
    prepare = request.POST.get("prepare") == "1"
    job = services.queue_host_check(host, Actor.of(request), prepare=prepare)
    doing = "Preparing" if prepare else "Checking"
    messages.success(request, f"{doing} {host.name} (job #{job.pk}); this page shows the result.")
    return redirect("host_detail", pk=host.pk)


@require("hosts.manage")
@require_POST
def host_forget_key(request: HttpRequest, pk: int) -> HttpResponse:
    host = _host(request, pk)
    services.forget_host_key(host, Actor.of(request))
    messages.success(request, "Forgot the host key; the next check pins the one it shows then.")
    return redirect("host_detail", pk=host.pk)


@require("hosts.manage")
def host_remove(request: HttpRequest, pk: int) -> HttpResponse:
    host = _host(request, pk)
    if request.method == "POST":
        try:
            services.remove_host(host, Actor.of(request))
        except Refusal as e:
            messages.error(request, str(e))
            return redirect("host_detail", pk=host.pk)
        messages.success(request, f"Removed {host.name}.")
        return redirect("hosts")
    return render(request, "deploys/host_remove.html", {"host": host})
