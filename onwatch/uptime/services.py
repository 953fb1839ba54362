"""What other apps (the dashboard) read about monitors: from the monitors' state columns
and the incidents, never from check results."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from onwatch.alerts.services import unresolved_incident_count
from onwatch.core.models import Organization
from onwatch.uptime.models import Monitor, State

DOWN_SHOWN = 10


def state_counts(org: Organization) -> dict[str, int]:
    rows = Monitor.objects.filter(org=org).values_list("state").annotate(n=Count("id"))
    counts = dict.fromkeys(State.values, 0)
    counts.update({str(s): n for s, n in rows.values_list("state", "n")})
    return counts


def summary(org: Organization) -> dict[str, Any]:
    counts = state_counts(org)
    down = Monitor.objects.filter(org=org, state=State.DOWN).order_by("state_since", "id")
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "down": list(down.only("id", "name", "state_since")[:DOWN_SHOWN]),
        # Not outages, but people must hear of them: a certificate about to expire.
        "warnings": list(
            Monitor.objects.filter(org=org)
            .exclude(warning="")
            .order_by("name", "id")
            .only("id", "name", "warning", "cert_expires_at")[:DOWN_SHOWN]
        ),
        "open_incidents": unresolved_incident_count(org, "uptime."),
    }
