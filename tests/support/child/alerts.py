"""Child-process functions on alert channels, incidents and notifications (see
tests.support.child)."""

from __future__ import annotations

import json

from onwatch.alerts import incidents
from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core.models import Organization


def add_channels(org_name: str, urls: dict[str, str]) -> None:
    """Channels (name -> Apprise URL) added the way onwatch adds them: URLs encrypted."""
    org, _ = Organization.objects.get_or_create(name=org_name)
    for name, url in urls.items():
        add_channel(org, name, url)


def test_deliveries(org_name: str) -> None:
    """Print the test deliveries and the newest "channel-tested" audit entry, as JSON."""
    import json

    from onwatch.alerts.models import Delivery
    from onwatch.core.models import AuditEntry

    fields = ["channel_name", "title", "body", "is_test", "notify_type"]
    rows = Delivery.objects.filter(org__name=org_name, is_test=True).values(*fields)
    e = AuditEntry.objects.filter(action="channel-tested").order_by("-seq").first()
    tested = e and {"actor": e.actor, "ip": e.ip, "target": e.target, "data": e.data}
    print(json.dumps({"deliveries": list(rows), "tested": tested}))


def open_incident(org_name: str, source: str, title: str) -> None:
    """An incident opened the way a failing monitor opens one; when it opened, as a Unix
    timestamp."""
    org = Organization.objects.get(name=org_name)
    print(incidents.open_incident(org, source, title, {}).opened_at.timestamp())


def print_delivery_titles() -> None:
    """The title of every notification onwatch sent or tried to send, as JSON."""
    print(json.dumps(list(Delivery.objects.values_list("title", flat=True))))
