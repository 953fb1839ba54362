"""Cron expressions with a time zone, through cronsim. Bad ones become ValidationErrors
with a message for people; nothing else escapes from here."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.core.exceptions import ValidationError

EXAMPLE = "use five fields like '0 3 * * *' (03:00 daily)"


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{tz!r} is not a time zone; use a name like Europe/Prague or UTC", code="tz"
        ) from None


def validate_schedule(expr: str, tz: str) -> None:
    tzinfo = zone(tz)
    # cronsim also takes a sixth (seconds) field; the scheduler ticks every few seconds,
    # so a seconds field would promise a precision onwatch does not keep.
    if len(expr.split()) != 5:
        raise ValidationError(f"{expr!r} is not a cron expression; {EXAMPLE}", code="cron")
    try:
        CronSim(expr, datetime.now(tzinfo))
    except (CronSimError, ValueError) as e:
        reason = str(e).lower() or "not understood"
        raise ValidationError(
            f"{expr!r} is not a valid cron expression ({reason}); {EXAMPLE}", code="cron"
        ) from None


def next_after(expr: str, tz: str, after: datetime) -> datetime:
    """The first run time strictly after `after`, in UTC. Raises ValidationError."""
    validate_schedule(expr, tz)
    local = next(CronSim(expr, after.astimezone(zone(tz))))
    # In UTC because Python calls a time in a repeated (autumn) hour unequal to the same
    # instant in any other zone; UTC has no repeated hours.
    return local.astimezone(UTC)
