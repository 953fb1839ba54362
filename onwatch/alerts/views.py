from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from onwatch.alerts.models import Channel, Delivery
from onwatch.core.decorators import require


@require("channels.view")
def channels(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    return render(request, "alerts/channels.html", {"channels": Channel.objects.filter(org=org)})


@require("channels.view")
def deliveries(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    rows = Delivery.objects.filter(org=org)[:200]
    return render(request, "alerts/deliveries.html", {"deliveries": rows})
