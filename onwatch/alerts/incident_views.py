"""Incidents (list, timeline, acknowledge, resolve, notes), escalation policies and maintenance
windows. Thin: the work is in incidents.py and incident_forms.py."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from onwatch.alerts import incidents, services
from onwatch.alerts.incident_forms import (
    MaintenanceForm,
    NoteForm,
    PolicyForm,
    maintenance_initial,
    maintenance_spec,
    policy_spec,
    step_formset,
)
from onwatch.alerts.models import (
    Channel,
    EscalationPolicy,
    Incident,
    IncidentState,
    Maintenance,
)
from onwatch.alerts.services import Refused, describe_maintenance, describe_policy
from onwatch.core.audit import Actor
from onwatch.core.decorators import can, require

LIST_LIMIT = 200


def _incident(request: HttpRequest, pk: int) -> Incident:
    # Scoped to the member's organization: another organization's incident is a 404.
    return get_object_or_404(Incident, pk=pk, org=request.org)  # type: ignore[attr-defined]


@require("incidents.view")
def incident_list(request: HttpRequest) -> HttpResponse:
    # Open first, then acknowledged, then the resolved history; newest first in each.
    rank = Case(
        When(state=IncidentState.OPEN, then=Value(0)),
        When(state=IncidentState.ACKNOWLEDGED, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    rows = (
        Incident.objects.filter(org=request.org)  # type: ignore[attr-defined]
        .annotate(rank=rank)
        .order_by("rank", "-opened_at", "-id")
    )
    return render(request, "alerts/incidents/list.html", {"incidents": rows[:LIST_LIMIT]})


@require("incidents.view")
def incident_detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = _incident(request, pk)
    ctx = {
        "incident": incident,
        "events": incident.events.all(),
        "evidence": sorted(incident.evidence.items()),
        "notified": incidents.notified_channels(incident),
        "can_respond": can(request, "incidents.respond"),
        "note_form": NoteForm(),
    }
    return render(request, "alerts/incidents/detail.html", ctx)


@require("incidents.respond")
@require_POST
def incident_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.acknowledge_incident(_incident(request, pk), Actor.of(request))
    except Refused as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Acknowledged: escalation and reminders have stopped.")
    return redirect("incident_detail", pk=pk)


@require("incidents.respond")
@require_POST
def incident_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        services.resolve_incident(_incident(request, pk), Actor.of(request))
    except Refused as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Resolved: whoever was told about it hears that it is over.")
    return redirect("incident_detail", pk=pk)


@require("incidents.respond")
@require_POST
def incident_note(request: HttpRequest, pk: int) -> HttpResponse:
    incident = _incident(request, pk)
    try:
        services.add_incident_note(incident, request.POST.get("text", ""), Actor.of(request))
    except Refused as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Note added to the timeline.")
    return redirect("incident_detail", pk=pk)


@require("incidents.view")
def policy_list(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    policies = EscalationPolicy.objects.filter(org=org).prefetch_related("steps__channels")
    ctx = {
        "policies": [(p, describe_policy(p)) for p in policies],
        "can_manage": can(request, "policies.manage"),
        "has_channels": Channel.objects.filter(org=org).exists(),
    }
    return render(request, "alerts/policies/list.html", ctx)


@require("policies.manage")
def policy_add(request: HttpRequest) -> HttpResponse:
    return _policy_form(request, None)


@require("policies.manage")
def policy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    return _policy_form(request, get_object_or_404(EscalationPolicy, pk=pk, org=org))


def _policy_form(request: HttpRequest, policy: EscalationPolicy | None) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    data = request.POST if request.method == "POST" else None
    initial = {}
    if policy is not None:
        initial = {
            "name": policy.name,
            "repeat_minutes": policy.repeat_minutes,
            "notify_recovery": policy.notify_recovery,
        }
    form = PolicyForm(data, org=org, policy=policy, initial=initial)
    steps = step_formset(data, org, policy)
    if data is not None and form.is_valid() and steps.is_valid():
        try:
            saved = services.save_policy(org, policy, policy_spec(form, steps), Actor.of(request))
        except Refused as e:
            form.add_error(e.field if e.field in form.fields else None, str(e))
        else:
            messages.success(request, f"Escalation policy {saved.name} saved.")
            return redirect("policies")
    ctx = {"form": form, "steps": steps, "policy": policy}
    return render(request, "alerts/policies/form.html", ctx)


@require("policies.manage")
@require_POST
def policy_delete(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    policy = get_object_or_404(EscalationPolicy, pk=pk, org=org)
    services.remove_policy(policy, Actor.of(request))
    messages.success(
        request, f"Policy {policy.name} removed; incidents that used it now notify every channel."
    )
    return redirect("policies")


@require("incidents.view")
def maintenance_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    windows = Maintenance.objects.filter(org=request.org)  # type: ignore[attr-defined]
    rows = [(m, describe_maintenance(m), incidents.maintenance_active(m, now)) for m in windows]
    ctx = {"windows": rows, "can_manage": can(request, "maintenance.manage")}
    return render(request, "alerts/maintenance/list.html", ctx)


@require("maintenance.manage")
def maintenance_add(request: HttpRequest) -> HttpResponse:
    return _maintenance_form(request, None)


@require("maintenance.manage")
def maintenance_edit(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    return _maintenance_form(request, get_object_or_404(Maintenance, pk=pk, org=org))


def _maintenance_form(request: HttpRequest, m: Maintenance | None) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    data = request.POST if request.method == "POST" else None
    form = MaintenanceForm(data, initial=maintenance_initial(m) if m else None)
    if data is not None and form.is_valid():
        spec = maintenance_spec(form.cleaned_data)
        saved = services.save_maintenance(org, m, spec, Actor.of(request))
        messages.success(request, f"Maintenance window {saved.name} saved.")
        return redirect("maintenance")
    return render(request, "alerts/maintenance/form.html", {"form": form, "window": m})


@require("maintenance.manage")
@require_POST
def maintenance_delete(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    m = get_object_or_404(Maintenance, pk=pk, org=org)
    services.remove_maintenance(m, Actor.of(request))
    messages.success(
        request, f"Maintenance window {m.name} removed; alerts it held go out on the next tick."
    )
    return redirect("maintenance")
