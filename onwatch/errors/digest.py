"""The digest of queued envelopes (fastroute.py queues them, answered 200): a batch read
from the queue, each envelope decompressed, read, scrubbed and grouped outside any
transaction, then stored and taken off the queue in one (services.digest). Run by the
ingest layer's digester thread in each web process."""

from __future__ import annotations

import base64
import logging

from onwatch.errors import intake, protocol, services
from onwatch.errors.intake import Incoming
from onwatch.errors.models import Queued
from onwatch.errors.protocol import ProtocolError

log = logging.getLogger(__name__)

# Envelopes per transaction: enough to share the statements per table (services.
# store_events), few enough that SQLite's write lock, which the answers wait for, is held
# for tens of ms rather than hundreds.
BATCH = 100


def digest() -> int:
    """One batch of the queue digested, oldest first; how many envelopes (0: none)."""
    rows = list(Queued.objects.order_by("pk")[:BATCH])
    if not rows:
        return 0
    return services.digest([(row, readable(row)) for row in rows])


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
