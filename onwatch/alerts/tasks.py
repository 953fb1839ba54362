from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from onwatch.alerts import apprise, incidents, services
from onwatch.alerts.models import Delivery, DeliveryState
from onwatch.core.jobs import JobContext, JobFailed, RetryLater, handler, when_cancelled
from onwatch.core.models import Job


@handler("alerts.deliver", quiet=True, queue="alerts")
def deliver(ctx: JobContext) -> dict[str, Any]:
    delivery = Delivery.objects.select_related("channel").get(pk=ctx.job.payload["delivery"])
    if delivery.channel is None:
        Delivery.objects.filter(pk=delivery.pk).update(
            state=DeliveryState.FAILED, error="The channel was removed", finished_at=timezone.now()
        )
        raise JobFailed("the channel was removed before delivery")
    attempt = ctx.job.attempts
    ctx.log(f"attempt {attempt}: sending to {delivery.channel_name} ({delivery.channel.service})")
    try:
        apprise.send(
            delivery.channel.url,
            delivery.title,
            delivery.body,
            kind_of(delivery),
            # Checked again at every delivery, not only when saved: see apprise.py.
            public_only=delivery.channel.owner_id is not None
            and not services.own_channels_reach_inside(),
        )
    except apprise.ChannelError as e:
        # A refused address stays refused: failed at once, not retried for an hour.
        last = attempt >= ctx.job.max_attempts or isinstance(e, apprise.InsideNetwork)
        Delivery.objects.filter(pk=delivery.pk).update(
            state=DeliveryState.FAILED if last else DeliveryState.RETRYING,
            attempts=attempt,
            error=str(e),
            finished_at=timezone.now() if last else None,
        )
        if isinstance(e, apprise.InsideNetwork):
            raise JobFailed(str(e)) from e
        raise RetryLater(str(e)) from e
    Delivery.objects.filter(pk=delivery.pk).update(
        state=DeliveryState.DELIVERED, attempts=attempt, error="", finished_at=timezone.now()
    )
    ctx.log("delivered")
    return {"delivered": True}


def kind_of(delivery: Delivery) -> apprise.NotifyType:
    # A row written by an older version (or by hand) with an unknown type goes out as info
    # rather than not at all.
    for known in apprise.NOTIFY_TYPES:
        if delivery.notify_type == known:
            return known
    return "info"


def cancelled(job: Job) -> None:
    """A cancelled delivery is not sent: say so on its row instead of leaving it pending."""
    Delivery.objects.filter(job=job).exclude(state=DeliveryState.DELIVERED).update(
        state=DeliveryState.FAILED, error=job.error, finished_at=timezone.now()
    )


when_cancelled("alerts.deliver", cancelled)


def on_tick(now: datetime | None = None) -> dict[str, int]:
    """What the scheduler does for alerts on every tick: let incidents out of maintenance
    windows that ended, then send every escalation step and reminder that is due."""
    now = now or timezone.now()
    released = incidents.release_ended_maintenance(now)
    return {"released": released, "escalated": incidents.escalate_due(now)}
