"""Heartbeat pings as a fast route of the ingest layer (onwatch/core/ingest).

Through Django a ping costs some 7 ms of CPU (a thread hop, a new database connection,
the middleware, three ORM queries), which caps ingest near 150 pings/s. The ordinary
pings — a success, /start or /log with no query string, for a heartbeat whose state does
not change — are taken by the ingest layer instead, stored in group commits by its
writer. What a ping does is still decided by onwatch/uptime/pings.py (`effect`) and its
row is a Ping built like pings.record builds it. Anything else — a state change, a
failure, a run id, a slug URL, an unknown heartbeat — goes to Django, so its answers and
rows stay the reference.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from onwatch.core.ingest import Accepted, Answer, Route
from onwatch.core.ingest.request import Request
from onwatch.core.ingest.store import Store
from onwatch.uptime import pings
from onwatch.uptime.models import Kind, Monitor, Ping, State
from onwatch.uptime.pings import PingError, Received

# The same URL forms as onwatch/uptime/urls.py, for the UUID form only.
PATH = re.compile(
    r"/ping/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?:/([^/]+))?/?"
)
# What effect() reads of a monitor.
READ = ("id", "kind", "enabled", "state", "failures", "config", "last_ping_at", "last_start_at")
OK = Answer(200, b"OK\n")


def accept(request: Request, body: bytes) -> Accepted | None:
    """The ping to store, or None for Django (see the module's docstring)."""
    found = PATH.fullmatch(request.path)
    if found is None or request.query:
        return None
    try:
        kind, exit_status = pings.parse_action(found.group(2))
    except PingError:
        return None  # Django answers 400 with the reason
    if kind == Ping.Type.FAIL:
        return None  # changes state: Django's path
    ping_id = uuid.UUID(found.group(1))
    got = Received(
        type=kind,
        exit_status=exit_status,
        body=pings.body_text(body),
        remote_addr=request.remote_addr,
        method=request.method,
        user_agent=request.user_agent,
    )
    return Accepted(str(ping_id), (ping_id, got))


def write(store: Store, item: tuple[uuid.UUID, Received], now: datetime) -> Answer | None:
    ping_id, got = item
    monitor = store.get(Monitor, "ping_id", ping_id, READ)
    if monitor is None or monitor.kind != Kind.HEARTBEAT:
        return None  # Django answers 404
    done = pings.effect(monitor, got, now) if got.type != Ping.Type.LOG else None
    if done is not None:
        if done.outcome is not None and not done.outcome.ok:
            return None  # a failure: the state machine's business
        fields = dict(done.fields)
        where: dict[str, object] = {"id": monitor.pk}
        if done.outcome is not None:
            # As pings.quick_update: for a heartbeat that is not up with no failures
            # counted, a success changes state, which Django does.
            fields["last_checked_at"] = now
            where |= {"state": State.UP.value, "failures": 0}
        if store.update(Monitor, fields, where) != 1:
            return None
    store.add(pings.new_ping(monitor, got, now, done.duration if done is not None else None))
    return OK


ROUTE = Route(
    name="heartbeat pings",
    noun="ping",
    prefix="/ping/",
    accept=accept,
    write=write,
    limit=pings.LIMIT,
    teach=OK.body,
    max_body=pings.BODY_REFUSE,
    too_many=pings.too_many,
)
