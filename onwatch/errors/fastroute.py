"""The envelope and store endpoints as a fast route of the ingest layer
(onwatch/core/ingest): key, size, rate limit and the envelope's framing checked in a
thread of the layer (a big body must not hold the event loop), then the envelope
appended as it came to the process's spool (spooled.py) in that thread — "accepted" means
kept durably, as with Sentry's Relay and Kafka — without the database's write lock. The
digest (digest.py) reads, scrubs, groups and stores the spooled envelopes in batches
after the answer: a request costs the answer only the checks and an append, and a burst
waits in the spool rather than in the SDKs' connections. The rare request read whole
here (attachments, the store endpoint) is stored by the layer's writer.

Anything `intake.accept_or_queue` cannot read goes to Django's view, which runs the same
code and answers with the reason, so bad input costs the fast path nothing and has one
answer.
"""

from __future__ import annotations

import re
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from onwatch.core.ingest import Accepted, Answer, Route
from onwatch.core.ingest.limits import Limit
from onwatch.core.ingest.request import Request
from onwatch.core.ingest.store import Store
from onwatch.errors import digest, intake, protocol, spooled
from onwatch.errors.intake import Incoming, Waiting
from onwatch.errors.protocol import ProtocolError
from onwatch.errors.services import REASONS

PATH = re.compile(r"/api/(\d{1,18})/(envelope|store)/")
# The rate limit is intake's, per project, counted once the request was read; the layer's
# own would answer 429 without the headers SDKs read and without counting the refusal.
UNLIMITED = Limit(lambda: 1e12)


def accept(request: Request, body: bytes) -> Accepted | None:
    found = PATH.fullmatch(request.path)
    if found is None or request.method != "POST":
        return None
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in request.headers
        if name in (b"x-sentry-auth", b"content-encoding")
    }
    try:
        incoming = intake.accept_or_queue(
            int(found.group(1)), found.group(2), headers, request.query, body, request.remote_addr
        )
        if isinstance(incoming, Incoming):
            digest.events_first(incoming)
    except ProtocolError:
        return None  # Django's view answers with the reason
    except DatabaseError:
        # The key's lookup met a database that does not answer (restarting, busy): Django's
        # view answers as it does for any request then, not a bare 500 of the server.
        return None
    finally:
        # The key's lookup opened a connection in this thread of the layer, which Django's
        # request cycle will never close.
        connection.close()
    return Accepted(found.group(1), incoming)


def spool(item: Incoming | Waiting) -> Answer | None:
    """An envelope to digest later, spooled; None for what the writer stores now. A web
    process that does not digest (ONWATCH_INGEST_DIGEST=0: a machine that only takes
    events, on PostgreSQL) has its writer queue envelopes in the database instead, where
    the digest of another machine finds them; nobody would read its spool."""
    if isinstance(item, Waiting) and settings.INGEST_DIGEST:
        return spooled.take(item, timezone.now())
    return None


def write(store: Store, item: Incoming | Waiting, now: datetime) -> Answer | None:
    # Through the ORM on the writer's connection, inside its transaction: an event is a
    # handful of rows across tables whose ids depend on each other.
    return intake.write(item, now)


def write_all(store: Store, items: list[Incoming | Waiting], now: datetime) -> list[Answer | None]:
    # A batch's events at once: one statement per table rather than a handful per event.
    return list(intake.write_all(items, now))


def busy() -> Answer:
    """Too many requests wait for the database: 429, so SDKs wait before sending more.
    Counted in the server log (the ingest layer's "turned away"), not on the project page:
    counting it there would add to the very writes that are behind."""
    return intake.refusal(
        429, f"refused: {REASONS['queue_full']}; send again later", "queue_full", 5
    )


ROUTE = Route(
    name="error events",
    noun="event",
    prefix="/api/",
    accept=accept,
    write=write,
    write_all=write_all,
    spool=spool,
    limit=UNLIMITED,
    teach=intake.OK.body,
    methods=frozenset(("POST",)),
    max_body=protocol.MAX_BODY,
    busy=busy,
    threaded=True,
    error_header=intake.ERROR_HEADER,
    digest=digest.digest,
)
