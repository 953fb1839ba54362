from __future__ import annotations

from django.contrib import messages
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from onwatch.alerts import apprise, services
from onwatch.alerts.forms import ChannelForm, OwnChannelForm
from onwatch.alerts.models import Channel, Delivery, DeliveryState
from onwatch.core.audit import Actor
from onwatch.core.decorators import api, require
from onwatch.core.roles import has_permission


def _channel(request: HttpRequest, pk: int) -> Channel:
    # Scoped to the member's organization: another organization's channel is a 404; so is
    # a member's own channel (Channel.objects leaves them out), which is theirs alone.
    return get_object_or_404(Channel.objects, pk=pk, org=request.org)  # type: ignore[attr-defined]


@require("channels.view")
def channels(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    role = request.membership.role  # type: ignore[attr-defined]
    last = Delivery.objects.filter(channel=OuterRef("pk")).order_by("-created_at", "-id")
    rows = Channel.objects.filter(org=org).annotate(
        last_state=Subquery(last.values("state")[:1]),
        last_at=Subquery(last.values("created_at")[:1]),
    )
    ctx = {
        "channels": rows,
        "can_manage": has_permission(role, "channels.manage"),
        "can_test": has_permission(role, "channels.test"),
    }
    return render(request, "alerts/channels.html", ctx)


@require("channels.manage")
def channel_add(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    form = ChannelForm(request.POST or None, org=org)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            ch = services.add_channel(org, data["name"], data["url"], Actor.of(request))
        except services.Refused as e:  # the name was taken since the form checked it
            form.add_error("name", str(e))
        else:
            messages.success(request, f"Channel {ch.name} added. Send it a test to be sure.")
            return redirect("channels")
    return render(request, "alerts/channel_form.html", {"form": form, "channel": None})


@require("channels.manage")
def channel_edit(request: HttpRequest, pk: int) -> HttpResponse:
    ch = _channel(request, pk)
    data = request.POST if request.method == "POST" else None
    form = ChannelForm(data, org=ch.org, channel=ch, initial={"name": ch.name})
    if request.method == "POST" and form.is_valid():
        name, url = form.cleaned_data["name"], form.cleaned_data["url"]
        try:
            changed = services.change_channel(ch, name, url, Actor.of(request))
        except services.Refused as e:  # the name was taken since the form checked it
            form.add_error("name", str(e))
        else:
            if changed:
                messages.success(request, f"Channel {ch.name} saved.")
            return redirect("channels")
    return render(request, "alerts/channel_form.html", {"form": form, "channel": ch})


@require("channels.manage")
@require_POST
def channel_delete(request: HttpRequest, pk: int) -> HttpResponse:
    ch = _channel(request, pk)
    services.remove_channel(ch, Actor.of(request))
    messages.success(request, f"Channel {ch.name} removed; its past deliveries stay in the log.")
    return redirect("channels")


@require("channels.test")
@require_POST
def channel_test(request: HttpRequest, pk: int) -> HttpResponse:
    ch = _channel(request, pk)
    services.send_test(ch, Actor.of(request))
    messages.success(request, f"Test notification queued for {ch.name}; its outcome appears below.")
    return redirect("deliveries")


@require("channels.view")
def deliveries(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    rows = Delivery.objects.filter(org=org).select_related("job")
    state = request.GET.get("state", "")
    if state in DeliveryState.values:
        rows = rows.filter(state=state)
    ctx = {
        "deliveries": rows[:200],
        "state": state,
        "states": DeliveryState.values,
        "failed": Delivery.objects.filter(org=org, state=DeliveryState.FAILED).count(),
    }
    return render(request, "alerts/deliveries.html", ctx)


@api("channels:read")
@require_GET
def api_channels(request: HttpRequest) -> JsonResponse:
    """Listed without their URLs: a channel URL may carry a secret."""
    rows = Channel.objects.filter(org=request.org).values("id", "name", "service")  # type: ignore[attr-defined]
    return JsonResponse({"channels": list(rows)})


@require("ownchannel.manage")
def own_channel(request: HttpRequest) -> HttpResponse:
    """Where the member hears about their own pushes: one Apprise URL of their own."""
    org = request.org  # type: ignore[attr-defined]
    form = OwnChannelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.set_own_channel(org, request.user, form.cleaned_data["url"], Actor.of(request))
        except apprise.ChannelError as e:
            form.add_error("url", str(e))
        else:
            messages.success(request, "Saved your own channel. Send it a test to be sure.")
            return redirect("own_channel")
    mine = services.own_channel(org, request.user)
    last = Delivery.objects.filter(channel=mine).first() if mine else None
    ctx = {"form": form, "channel": mine, "last": last}
    return render(request, "alerts/own_channel.html", ctx)


@require("ownchannel.manage")
@require_POST
def own_channel_test(request: HttpRequest) -> HttpResponse:
    mine = services.own_channel(request.org, request.user)  # type: ignore[attr-defined]
    if mine is None:
        messages.error(request, "You have no channel of your own yet; set one first.")
        return redirect("own_channel")
    services.send_test(mine, Actor.of(request))
    messages.success(request, "Test notification queued for your own channel.")
    return redirect("own_channel")


@require("ownchannel.manage")
@require_POST
def own_channel_remove(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    if services.remove_own_channel(org, request.user, Actor.of(request)):
        messages.success(request, "Removed your own channel; the service's channels still hear.")
    else:
        messages.error(request, "You have no channel of your own.")
    return redirect("own_channel")
