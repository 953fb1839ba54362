"""Rate limits of ingest: a token bucket per key (a heartbeat, a project), in memory.

The buckets live in each web process, so a request costs no database work to be counted;
with several web processes (ONWATCH_WEB_WORKERS) each holds its own, and a key may get up
to that many times its rate. That is the price of counting thousands of requests a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

# A flag on the ASGI scope: the ingest layer counted this request already, then handed it
# to Django; the view must not count it twice.
COUNTED = "onwatch.ingest.counted"
# Keys seen lately, kept at most: requests for made-up keys must not grow memory forever.
MAX_KEYS = 100_000


class Limit:
    """At most `rate()` requests a second per key, with bursts of `burst` seconds' worth.
    The rate is read on every call, so a changed setting (or a test's) applies at once."""

    def __init__(self, rate: Callable[[], float], burst: float = 10.0) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, when counted)
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one request for `key`; False when it is over the limit."""
        rate = self.rate()
        full = max(1.0, rate * self.burst)
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.get(key) or (full, now)
            tokens = min(full, tokens + (now - then) * rate)
            allowed = tokens >= 1.0
            self.buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            if len(self.buckets) > MAX_KEYS:
                # The longest known goes: it starts again with a full bucket (too lenient
                # for a moment, never too strict).
                del self.buckets[next(iter(self.buckets))]
        return allowed

    def allow_request(self, scope: Any, key: str) -> bool:
        """`allow` for a request Django serves: not counted again if the ingest layer
        counted it before handing it over (`scope` is the ASGI scope, or None)."""
        if scope is not None and scope.get(COUNTED):
            return True
        return self.allow(key)
