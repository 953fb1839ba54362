"""Logging filters named in settings.LOGGING (no Django models here: logging is set up
before the apps are)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

# The ID of the request being answered (core.middleware.RequestIdMiddleware sets it).
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")


class RequestId(logging.Filter):
    """Gives every record `request_id`: " [request <id>]" while a request is answered, else
    "" — so a traceback in the log can be found from the X-Request-ID a person reports."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a 4xx answer ("Not Found: /x") after the middleware has returned and
        # reset the context; such lines carry the request itself, which holds its ID.
        rid = REQUEST_ID.get() or getattr(getattr(record, "request", None), "id", "")
        record.request_id = f" [request {rid}]" if isinstance(rid, str) and rid else ""
        return True


class QuietPingRefusals(logging.Filter):
    """Drops Django's "Not Found" / "Bad Request" warnings for heartbeat ping URLs.

    A 4xx answer to a ping already tells the sender what is wrong, in plain words; a cron
    job pinging a removed heartbeat every minute would otherwise write a warning a minute,
    and a scan of random UUIDs a warning per request, burying the lines that matter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        request = getattr(record, "request", None)
        path = getattr(request, "path", "")
        refused = isinstance(status, int) and 400 <= status < 500
        return not (refused and isinstance(path, str) and path.startswith("/ping/"))
