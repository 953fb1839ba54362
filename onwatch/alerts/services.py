"""What other apps call to alert people. Every alert becomes durable deliveries."""

from __future__ import annotations

from django.db import transaction

from onwatch.alerts.models import Channel, Delivery
from onwatch.core import jobs
from onwatch.core.models import Organization

DELIVERY_ATTEMPTS = 6
TEST_TITLE = "onwatch test notification"
TEST_BODY = "If you can read this, onwatch's alerts reach you on this channel."


def deliver(channel: Channel, title: str, body: str, is_test: bool = False) -> Delivery:
    with transaction.atomic():
        delivery = Delivery.objects.create(
            org=channel.org,
            channel=channel,
            channel_name=channel.name,
            title=title[:200],
            body=body,
            is_test=is_test,
        )
        delivery.job = jobs.enqueue(
            "alerts.deliver",
            {"delivery": delivery.pk},
            org=channel.org,
            max_attempts=DELIVERY_ATTEMPTS,
        )
        delivery.save(update_fields=["job"])
    return delivery


def raise_alert(org: Organization | None, title: str, body: str) -> list[Delivery]:
    """Send to every channel of `org` (every organization's, for install-wide trouble)."""
    channels = Channel.objects.all() if org is None else Channel.objects.filter(org=org)
    return [deliver(ch, title, body) for ch in channels]
