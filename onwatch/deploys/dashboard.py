"""The dashboard's Services card: what each deployed service serves now, how its last
deploy went (and its watch), and the open incidents deploys raised. Without it the
dashboard said "0 open incidents" (the monitors') while a rolled-back release's was open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onwatch.alerts.services import unresolved_incident_count
from onwatch.core.models import Organization
from onwatch.deploys import services
from onwatch.deploys.models import Deploy, Release, Service, Watch

SHOWN = 10


@dataclass(frozen=True)
class Row:
    service: Service
    live: Release | None
    last: Deploy | None
    # The last deploy's own watch, or the watch that asked for it (a rollback).
    watch: Watch | None
    asked_by: Watch | None
    # On several hosts, what each serves as its last deploy noted (host, label): one
    # release for the service read as if every host served it.
    hosts: list[tuple[str, str]]


def summary(org: Organization) -> dict[str, Any]:
    deployed = Service.objects.filter(org=org).exclude(domain="").order_by("name")
    return {
        "rows": [row(s) for s in deployed[:SHOWN]],
        "more": max(0, deployed.count() - SHOWN),
        "open_incidents": unresolved_incident_count(org, "deploys."),
    }


def row(service: Service) -> Row:
    last = service.deploys.select_related("release").order_by("-pk").first()
    return Row(
        service,
        services.live_release(service),
        last,
        Watch.objects.filter(deploy=last).first() if last else None,
        Watch.objects.filter(rollback=last).first() if last else None,
        [(p.host.name, p.serving or "nothing yet") for p in services.placements(service)],
    )
