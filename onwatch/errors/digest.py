"""The digest of queued envelopes (fastroute.py queues them, answered 200): a batch read
from the queue, each envelope decompressed, read, scrubbed and grouped outside any
transaction, then stored and taken off the queue in one (services.digest). Run by the
ingest layer's digester thread in each web process."""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet

from onwatch.errors import intake, protocol, services
from onwatch.errors.intake import Incoming
from onwatch.errors.models import Queued
from onwatch.errors.protocol import ProtocolError

log = logging.getLogger(__name__)

# Envelopes per transaction: enough to share the statements per table (services.
# store_events), few enough that SQLite's write lock, which the answers wait for, is held
# for tens of ms rather than hundreds.
BATCH = 25
# How long attachments wait for their queued event to be digested (events_first).
WAIT_SECONDS = 10.0


def digest(queue: QuerySet[Queued] | None = None) -> int:
    """One batch of the queue (or of its part `queue`) digested, oldest first; how many
    envelopes (0: none)."""
    queue = Queued.objects.all() if queue is None else queue
    if connection.vendor != "sqlite":
        # The batch's rows locked for its transaction: the digests of other web processes
        # (on any machine) take the next ones meanwhile.
        with transaction.atomic():
            claimed = queue.select_for_update(skip_locked=True)
            return taken(list(claimed.order_by("pk")[:BATCH]))
    # SQLite's transaction holds the one write lock the answers wait for: the envelopes
    # are read before it, by one process at a time, so two do not read the same ones.
    with one_at_a_time():
        return taken(list(queue.order_by("pk")[:BATCH]))


def events_first(incoming: Incoming) -> None:
    """Attachments sent in an envelope of their own right after their event (answered 200
    once queued): the project's envelopes queued so far digested first, so the
    attachments find their event stored rather than being refused as early. Done here,
    whether or not this process runs the digest (ONWATCH_INGEST_DIGEST), before the
    writer's transaction, which must not wait for a digest. Ends when the events are
    stored, the queue up to now is digested, or after WAIT_SECONDS (the attachments are
    then refused, as before, never taken and dropped)."""
    wanted = services.sent_before(incoming)
    if not wanted or not services.not_stored(incoming.project_id, wanted):
        return
    queue = Queued.objects.filter(project_id=incoming.project_id)
    last = queue.order_by("-pk").values_list("pk", flat=True).first()
    ahead = queue.filter(pk__lte=last or 0)
    deadline = time.monotonic() + WAIT_SECONDS
    while services.not_stored(incoming.project_id, wanted) and ahead.exists():
        if time.monotonic() > deadline:
            return
        if not digest(ahead):
            # PostgreSQL: another process's digest holds them; it commits soon.
            time.sleep(0.02)


def taken(rows: list[Queued]) -> int:
    return services.digest([(row, readable(row)) for row in rows]) if rows else 0


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """The digest's file lock in the data folder, held while it reads and stores a batch."""
    fd = os.open(Path(settings.DATA_DIR) / "errors-digest.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the lock with it


def readable(row: Queued) -> Incoming | None:
    """The envelope read, scrubbed and grouped; None when it cannot be (answered 200 when
    its framing read, its events found malformed only now: counted and shown)."""
    try:
        data = protocol.unpacked(base64.b64decode(row.body), row.encoding)
        return intake.parsed(row.project_id, "envelope", "", data, row.remote_addr)
    except ProtocolError as e:
        log.warning("errors: a queued envelope of project %d cannot be read: %s", row.project_id, e)
    except Exception:
        # A bug must cost this envelope (counted, shown, logged), not stop the digest of
        # every other one behind it.
        log.exception("errors: a queued envelope of project %d failed to read", row.project_id)
    return None
