"""Configuration checked at start-up (Django system checks): one clear line each."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from onwatch.core.network import is_loopback


@register()
def check_plain_http_beyond_loopback(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if is_loopback(settings.HOST) or settings.SITE.https:
        return []
    return [
        Warning(
            f"onwatch listens on {settings.HOST} over plain HTTP, so passwords would cross the "
            "network unencrypted",
            hint="Put it behind Caddy (or another TLS proxy) and set "
            "ONWATCH_BASE_URL=https://your.host, or listen on 127.0.0.1 only",
            id="onwatch.W001",
        )
    ]


@register()
def check_time_zone(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    try:
        ZoneInfo(settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return [
            Error(
                f"ONWATCH_TIME_ZONE={settings.TIME_ZONE!r} is not a time zone",
                hint="Use a name like Europe/Prague or UTC",
                id="onwatch.E001",
            )
        ]
    return []
