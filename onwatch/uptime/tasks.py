"""Job handlers of the uptime app."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from onwatch.core.jobs import JobContext, handler
from onwatch.uptime import rollups


@handler("uptime.rollup")
def rollup(ctx: JobContext) -> dict[str, Any]:
    """Roll raw check results into hourly and daily history and age out old rows."""
    done = rollups.run(timezone.now())
    ctx.log(", ".join(f"{count} {what.replace('_', ' ')}" for what, count in done.items()))
    return done
