"""The digest of spooled envelopes (spooled.py keeps them, answered 200): a batch of
records read from the oldest spool file with any, each envelope decompressed, read,
scrubbed and grouped outside any transaction, then stored and the file's cursor moved
past them in one (services.digest_spooled); a file read to its end and finished by its
writer is removed. Run by the ingest layer's digester thread in each web process, one
process at a time (a file lock in the data folder). Envelopes an older version left
queued in the database (Queued) are digested first, the same way."""

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
from django.utils import timezone

from onwatch.core.ingest import spool
from onwatch.errors import intake, protocol, services, spooled
from onwatch.errors.intake import Incoming
from onwatch.errors.models import Queued, SpoolCursor
from onwatch.errors.protocol import ProtocolError

log = logging.getLogger(__name__)

# Envelopes per transaction: enough to share the statements per table (services.
# store_events), few enough that SQLite's write lock, which the answers wait for, is held
# for tens of ms rather than hundreds.
BATCH = 25
# How long attachments wait for their queued event to be digested (events_first).
WAIT_SECONDS = 10.0


def digest() -> int:
    """One batch digested, oldest first; how many records (0: none waiting)."""
    return digest_queued() or digest_spool()


def digest_spool() -> int:
    with one_at_a_time():
        for name in spool.files(spooled.folder()):
            done = digest_file(name)
            if done:
                return done
    return 0


def digest_file(name: str) -> int:
    """One batch of the file from its cursor; 0 when it has none (then it is removed, if
    its writer finished it)."""
    path = spooled.folder() / name
    # Looked at before reading: a writer that finishes after the read has added nothing.
    finished = spool.finished(path)
    start = cursor_of(name)
    found = spool.read(path, start, BATCH)
    if found.records:
        read = [entry_of(name, r) for r in found.records]
        return services.digest_spooled(name, start, found.end, read)
    if finished:
        if found.damaged:
            log.warning(
                "errors: the spool file %s ends in a record cut short (its writer was stopped "
                "mid-write): %d bytes skipped, the records before it kept",
                name,
                max(0, spool.size(path) - found.end),
            )
        removed(path)
    return 0


def cursor_of(name: str) -> int:
    found = SpoolCursor.objects.filter(name=name).values_list("offset", flat=True).first()
    return found or 0


def removed(path: Path) -> None:
    """The file read to its end, then its cursor: a crash between leaves only a cursor."""
    path.unlink(missing_ok=True)
    services.forget_spool_file(path.name)


def entry_of(name: str, record: spool.Record) -> tuple[spooled.Entry, Incoming | None]:
    """The record's entry and its envelope read (None: one that cannot be; a record that
    is not an entry at all is counted as an unreadable envelope of no project)."""
    try:
        entry = spooled.unpacked(record.payload)
    except Exception:
        log.exception(
            "errors: the record at %d of spool file %s cannot be read", record.offset, name
        )
        return spooled.Entry(0, timezone.now(), 0, refused="unreadable"), None
    if entry.refused:
        return entry, None
    return entry, envelope_of(entry.project_id, entry.remote_addr, entry.encoding, entry.body)


def digest_queued() -> int:
    """One batch of what an older version queued in the database, oldest first; how many
    envelopes (0: none)."""
    queue = Queued.objects.all()
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
    once spooled): what waits in the spool digested first, so the attachments find their
    event stored rather than being refused as early. Done here, whether or not this
    process runs the digest (ONWATCH_INGEST_DIGEST), before the writer's transaction,
    which must not wait for a digest. Ends when the events are stored, nothing waits, or
    after WAIT_SECONDS (the attachments are then refused, as before, never taken and
    dropped)."""
    wanted = services.sent_before(incoming)
    deadline = time.monotonic() + WAIT_SECONDS
    while services.not_stored(incoming.project_id, wanted):
        # Nothing left to digest: the events were never sent, or were refused.
        if time.monotonic() > deadline or not digest():
            return


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
    return envelope_of(row.project_id, row.remote_addr, row.encoding, base64.b64decode(row.body))


def envelope_of(project_id: int, remote: str, encoding: str, body: bytes) -> Incoming | None:
    """The envelope read, scrubbed and grouped; None when it cannot be (answered 200 when
    its framing read, its events found malformed only now: counted and shown)."""
    try:
        data = protocol.unpacked(body, encoding)
        return intake.parsed(project_id, "envelope", "", data, remote)
    except ProtocolError as e:
        log.warning("errors: a spooled envelope of project %d cannot be read: %s", project_id, e)
    except Exception:
        # A bug must cost this envelope (counted, shown, logged), not stop the digest of
        # every other one behind it.
        log.exception("errors: a spooled envelope of project %d failed to read", project_id)
    return None
