"""Services and pipelines: the list, a service (its key, secrets' names, last pipelines per
branch and "run now"), adding and changing one, and a pipeline's steps and log. Thin:
every change goes through services.py."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from onwatch.core import links, logpages, pushkeys, ssh
from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require
from onwatch.core.masking import Masker
from onwatch.core.models import ENDED as JOB_ENDED
from onwatch.core.rest import org_of
from onwatch.deploys import deploy_views, git, releases, sandbox, services, svcusers, workdir
from onwatch.deploys.forms import SecretForm, ServiceForm
from onwatch.deploys.models import Pipeline, Service
from onwatch.deploys.services import Refusal, ServiceFields

PIPELINES_SHOWN = 50
PER_BRANCH = 10
DELIVERIES_SHOWN = 10


def _service(request: HttpRequest, pk: int) -> Service:
    # Scoped to the member's organization: another organization's service is a 404.
    return get_object_or_404(Service, pk=pk, org=org_of(request))


@require("services.view")
def service_list(request: HttpRequest) -> HttpResponse:
    rows = []
    for service in Service.objects.filter(org=org_of(request)):
        rows.append(
            {
                "service": service,
                "last": service.pipelines.first(),
                # What serves where, and the last deploy: the list said only its tests.
                "where": releases.where_it_runs(service) if service.domain else [],
                "deploy": service.deploys.first(),
            }
        )
    ctx = {"rows": rows, "can_manage": can(request, "services.manage")}
    return render(request, "deploys/list.html", ctx)


def save_form(request: HttpRequest, form: ServiceForm, service: Service | None) -> Service | None:
    """The service saved from a valid form, or None with the refusal on the form."""
    if not form.is_valid():
        return None
    try:
        fields = ServiceFields(**form.service_fields())
        if service is None:
            return services.add_service(org_of(request), fields, Actor.of(request))
        services.change_service(service, fields, Actor.of(request))
        return service
    except Refusal as e:
        form.add_error(e.field if e.field in form.fields else None, str(e))
    return None


@require("services.manage")
def service_add(request: HttpRequest) -> HttpResponse:
    form = ServiceForm(request.POST or None, org=org_of(request))
    if request.method == "POST" and (saved := save_form(request, form, None)):
        key = " Give the repository its deploy key." if git.ssh_endpoint(saved.git_url) else ""
        messages.success(request, f"Added {saved.name}.{key}")
        return redirect("service_detail", pk=saved.pk)
    return render(request, "deploys/form.html", {"form": form, "service": None})


@require("services.manage")
def service_edit(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    initial = {
        name: getattr(service, name)
        for name in ("name", "git_url", "branch", "supersede", "poll_minutes", "backup_plan_id")
    }
    chosen = services.channels_chosen(service)
    initial |= {"only_chosen": chosen is not None, "alert_channels": chosen or []}
    form = ServiceForm(request.POST or None, initial=initial, org=service.org)
    if request.method == "POST" and save_form(request, form, service):
        messages.success(request, f"Saved {service.name}.")
        return redirect("service_detail", pk=service.pk)
    ctx = {"form": form, "service": service, "secret_form": SecretForm()}
    return render(request, "deploys/form.html", ctx)


@require("services.manage")
@require_POST
def service_secret(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    form = SecretForm(request.POST)
    if form.is_valid():
        try:
            name = form.cleaned_data["name"].strip()
            services.set_secret(service, name, form.cleaned_data["value"], Actor.of(request))
        except Refusal as e:
            messages.error(request, str(e))
        else:
            messages.success(request, f"Saved the secret {name}; its value is not shown again.")
    else:
        messages.error(request, "Give the secret a name and a value.")
    return redirect("service_edit", pk=service.pk)


@require("services.manage")
@require_POST
def service_secret_remove(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    name = request.POST.get("name", "")
    if services.remove_secret(service, name, Actor.of(request)):
        messages.success(request, f"Removed the secret {name}.")
    else:
        messages.error(request, f"{service.name} has no secret {name!r}.")
    return redirect("service_edit", pk=service.pk)


@require("services.manage")
@require_POST
def service_forget_host_key(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    services.forget_host_keys(service, Actor.of(request))
    messages.success(
        request, "Forgot the server's host key; the next pipeline pins the one it shows then."
    )
    return redirect("service_detail", pk=service.pk)


@require("services.manage")
@require_POST
def service_webhook_secret(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    services.renew_webhook_secret(service, Actor.of(request))
    messages.success(
        request, "Made a new webhook secret; put it in the repository's webhook settings."
    )
    return redirect("service_detail", pk=service.pk)


@require("services.manage")
def service_delete(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    error = ""
    if request.method == "POST":
        try:
            gone = services.delete_service(
                service, request.POST.get("confirm", ""), Actor.of(request)
            )
        except Refusal as e:
            error = str(e)
        else:
            stopped = f", {len(gone.cancelled)} running or queued stopped" if gone.cancelled else ""
            messages.success(
                request, f"Deleted {service.name} and its {gone.pipelines} pipelines{stopped}."
            )
            return redirect("services")
    ctx = {
        "service": service,
        "error": error,
        "pipelines": service.pipelines.count(),
        "under_way": service.pipelines.filter(state__in=services.UNDER_WAY).count(),
    }
    return render(request, "deploys/delete.html", ctx, status=400 if error else 200)


def _own_user_now(service: Service) -> bool:
    """Whether the service runs as its own user now: releases made live before it had one
    run as the shared step user until its next deploy moves them (releases.own_releases)."""
    if not svcusers.applies():
        return False
    live = services.live_release(service)
    own = svcusers.name_of(service.pk)
    return live is None or workdir.kept_for(Path(live.directory)) == own


@require("services.view")
def service_detail(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    recent = service.pipelines.select_related("pusher").order_by("branch", "-id")
    branches = [
        {
            "branch": branch,
            "pipelines": list(rows)[:PER_BRANCH],
            "spark": services.sparkline(service, branch),
        }
        for branch, rows in groupby(recent[:PIPELINES_SHOWN], key=lambda p: p.branch)
    ]
    ctx: dict[str, Any] = {
        "service": service,
        "branches": branches,
        "fingerprints": ssh.fingerprints(service.known_hosts),
        "uses_deploy_key": git.ssh_endpoint(service.git_url) is not None,
        "evidence": services.evidence(service),
        "alert_channels": services.deploy_channels(service),
        "memory_by": sandbox.memory_enforced_by(),
        "network_isolated": sandbox.network_isolated(),
        "network_guarded": sandbox.network_guarded(),
        "own_user": svcusers.name_of(service.pk) if svcusers.applies() else "",
        "own_user_now": _own_user_now(service),
        "sandbox_problem": workdir.step_problem(),
        "too_short": Masker(service.secrets).unmasked(),
        "can_run": can(request, "pipelines.run"),
        "can_manage": can(request, "services.manage"),
        "watch_rule": services.watch_rule(service),
        "hook_url": links.page("deploy_hook", service.pk),
        "push_remote": pushkeys.remote(service.name),
        "pushed_copy": services.pushed_repository(service),
        "deliveries": list(service.deliveries.select_related("pipeline")[:DELIVERIES_SHOWN]),
        **deploy_views.context(request, service),
    }
    return render(request, "deploys/detail.html", ctx)


@require("pipelines.run")
@require_POST
def service_run(request: HttpRequest, pk: int) -> HttpResponse:
    service = _service(request, pk)
    pipeline = services.run_pipeline(service, Actor.of(request), "ui")
    messages.success(request, f"Pipeline #{pipeline.pk} is queued; it starts when a slot is free.")
    return redirect("pipeline_detail", pk=pipeline.pk)


@require("services.view")
def pipeline_detail(request: HttpRequest, pk: int) -> HttpResponse:
    pipeline = get_object_or_404(
        Pipeline.objects.select_related("service", "job"), pk=pk, service__org=org_of(request)
    )
    job = pipeline.job
    ctx = {
        "pipeline": pipeline,
        "steps": list(pipeline.steps.all()),
        "job": job,
        "log": logpages.for_request(job, request.GET.dict()) if job else None,
        # Followed live while its job may still write lines.
        "ended": job is None or job.state in JOB_ENDED,
        # The deploys that waited for it: a green pipeline of a service with a domain
        # deploys by itself, and its page said nothing of it.
        "deploys": list(pipeline.deploy_set.order_by("pk")),
    }
    return render(request, "deploys/pipeline.html", ctx)
