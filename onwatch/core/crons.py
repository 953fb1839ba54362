from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.core.exceptions import ValidationError


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{tz!r} is not a time zone; use a name like Europe/Prague or UTC"
        ) from None


def validate_schedule(expr: str, tz: str) -> None:
    tzinfo = zone(tz)
    try:
        CronSim(expr, datetime.now(tzinfo))
    except (CronSimError, ValueError):
        raise ValidationError(
            f"{expr!r} is not a cron expression; use five fields like '0 3 * * *' (03:00 daily)"
        ) from None


def next_after(expr: str, tz: str, after: datetime) -> datetime:
    """The first run time strictly after `after`, in UTC-aware form. Raises ValidationError."""
    validate_schedule(expr, tz)
    return next(CronSim(expr, after.astimezone(zone(tz))))
