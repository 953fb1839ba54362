"""Until when sign-in is paused after wrong tries, read from allauth's own counters, so
the person is told what happened and when to try again instead of "try again later"."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from allauth.core.internal import ratelimit
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

APP, ACTION = "allauth.account", "login_failed"
# allauth's key for wrong second-factor codes of one account (mfa/base/internal/flows.py).
CODE_KEY = "mfa-auth-user-{pk}"


@dataclass(frozen=True)
class Pause:
    per: str  # "account" or "address"
    until: datetime

    def minutes_left(self, now: float | None = None) -> int:
        left = self.until.timestamp() - (now if now is not None else time.time())
        return max(1, math.ceil(left / 60))


def pause_of(request: HttpRequest, key: str) -> Pause | None:
    """The limit (per account or per address) that refuses wrong tries longest, if any."""
    now = time.time()
    found = [
        pause
        for rate in ratelimit.get_rates(app=APP, action=ACTION)
        if (pause := _pause_for(request, key, rate, now)) is not None
    ]
    return max(found, key=lambda p: p.until, default=None)


def _pause_for(request: HttpRequest, key: str, rate: ratelimit.Rate, now: float) -> Pause | None:
    cache_key = ratelimit.get_cache_key(request, app=APP, action=ACTION, rate=rate, key=key)
    tries = cache.get(cache_key, [])
    live = sorted((t for t in tries if t > now - rate.duration), reverse=True)
    if len(live) < rate.amount:
        return None
    # The try that frees a place is the oldest of the last `amount` ones.
    until = datetime.fromtimestamp(live[rate.amount - 1] + rate.duration, UTC)
    return Pause("address" if rate.per == "ip" else "account", until)


def explain(pause: Pause | None, step: str) -> str:
    """One plain sentence for the sign-in page; `step` is "password" or "code"."""
    if pause is None:
        return f"Too many wrong {step}s just now; wait a minute and try again."
    # An address may be a whole office's: say so, so nobody thinks they were the cause.
    source = (
        "for this account"
        if pause.per == "account"
        else "from your network address (which others may share)"
    )
    until = timezone.localtime(pause.until)
    return (
        f"Too many wrong {step}s {source}, so signing in is paused for safety. "
        f"Try again after {until:%H:%M %Z} (in {pause.minutes_left()} min)."
    )
