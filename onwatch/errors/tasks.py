"""The errors app's job (the digest that follows an issue's alert) and its tick."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from onwatch.core.jobs import JobContext, handler
from onwatch.errors import services


@handler(services.DIGEST_KIND, quiet=True)
def digest(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.job.payload
    told = services.send_digest(int(payload["issue"]), int(payload["minutes"]), timezone.now())
    ctx.log(f"told of {told} more events" if told else "no more events: nothing sent")
    return {"events": told}


def on_tick(now: datetime) -> None:
    """What time and deploys change without an event: the ignoring of issues whose time
    has passed ends, and a deployed fix resolves the issues waiting for the next release."""
    services.end_ignoring(now)
    services.resolve_deployed(now)
