"""The errors app's job: the digest that follows an issue's alert."""

from __future__ import annotations

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
