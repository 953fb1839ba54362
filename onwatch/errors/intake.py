"""What the envelope and store endpoints do, for the Django views and the ingest layer's
fast route alike: `accept` reads and scrubs a request without the database (in a thread
of the layer), `write` stores it (in the writer's batch, or in the view's transaction);
the fast route's `accept_or_queue` reads only an envelope's framing, and spooled.py
keeps it for the digest (digest.py) — or, in a web process that does not digest, `write`
queues it in the database.

Every answer in 2xx means stored, or spooled durably and then stored: whatever cannot be
taken is refused before, with 413 or 429 and the reason counted on the project page —
never answered 200 and dropped. (An envelope whose framing reads and whose event the
digest finds malformed is the one exception: it is counted as refused and shown.)
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from onwatch.core.ingest import Answer
from onwatch.core.ingest.limits import Limit
from onwatch.errors import grouping, keys, protocol, scrub
from onwatch.errors.grouping import Grouping
from onwatch.errors.protocol import Item, ProtocolError

# Fixed, so the ingest layer can tell this answer from any other under /api/ when it
# learns the headers of Django's answer (SDKs read only the status).
OK = Answer(200, b'{"stored":true}')
LIMIT = Limit(lambda: float(settings.ERRORS_RATE_LIMIT))
ERROR_HEADER = b"X-Sentry-Error"
RATE_RETRY_SECONDS = 1
DISK_RETRY_SECONDS = 60
Tallies = Counter[tuple[str, str]]  # (Tally.What, detail): count


@dataclass(slots=True)
class Incoming:
    """A request read and scrubbed, not yet stored. IP addresses are still whole: whether
    to keep them is the project's setting, applied in `write`."""

    project_id: int
    key: str
    remote_addr: str
    events: list[dict[str, Any]] = field(default_factory=list)
    # Each with the id of its event: in this envelope, or stored before.
    attachments: list[tuple[str, Item]] = field(default_factory=list)
    tallies: Tallies = field(default_factory=Counter)
    # Each event's grouping, worked out here rather than in the writer's transaction
    # (empty: the writer works it out).
    groups: list[Grouping] = field(default_factory=list)
    refused: str = ""  # why it must be refused before storing: rate_limited, disk_full


@dataclass(slots=True)
class Waiting:
    """An envelope to queue as it came (digest.py reads it): its key checked, its framing
    and sizes read, nothing of its events parsed yet."""

    project_id: int
    key: str
    remote_addr: str
    encoding: str
    body: bytes
    events: int  # event items: counted against the quota when queued
    refused: str = ""  # as Incoming.refused


def accept(
    project_id: int, kind: str, headers: dict[str, str], query: bytes, body: bytes, remote: str
) -> Incoming:
    """The request read; ProtocolError (400, 401, 403, 413) when it cannot be.

    The key is checked first and the request counted against its project's rate limit
    only then: a wrong key costs no decompression, and cannot use up a project's rate."""
    encoding, key = opened(project_id, kind, headers, query, body)
    return read(project_id, kind, key, protocol.unpacked(body, encoding), remote)


def accept_or_queue(
    project_id: int, kind: str, headers: dict[str, str], query: bytes, body: bytes, remote: str
) -> Incoming | Waiting:
    """What the fast route takes: an envelope of events (and counted items) to queue as
    it came, once its framing reads; the rare rest (the legacy store endpoint, attachments,
    which may belong to an event stored or queued before, digest.events_first, and are
    refused at once when it is neither) read here as `accept` reads it."""
    encoding, key = opened(project_id, kind, headers, query, body)
    data = protocol.unpacked(body, encoding)
    if kind != "envelope":
        return read(project_id, kind, key, data, remote)
    items = protocol.envelope(data)[1]
    if any(item.type == "attachment" for item in items):
        return read(project_id, kind, key, data, remote)
    events = [item for item in items if item.type == "event"]
    if any(len(item.payload) > protocol.MAX_EVENT for item in events):
        raise ProtocolError(f"an event is over {protocol.MAX_EVENT // 1024} KiB", 413)
    waiting = Waiting(project_id, key, remote, encoding, body, len(events))
    waiting.refused = limited(project_id)
    return waiting


def opened(
    project_id: int, kind: str, headers: dict[str, str], query: bytes, body: bytes
) -> tuple[str, str]:
    """The body's encoding and the key, checked; ProtocolError when either is wrong."""
    encoding = headers.get("content-encoding", "")
    key = protocol.sentry_key(headers.get("x-sentry-auth", ""), query)
    if key is None and kind == "envelope":
        key = protocol.envelope_key(body, encoding)
    keys.check(project_id, key)
    if len(body) > protocol.MAX_BODY:
        raise ProtocolError(f"the body is over {protocol.MAX_BODY // 1024} KiB", 413)
    return encoding, str(key)


def read(project_id: int, kind: str, key: str, data: bytes, remote: str) -> Incoming:
    """The request's decompressed body read, scrubbed and grouped, and rate-limited."""
    incoming = parsed(project_id, kind, key, data, remote)
    incoming.refused = limited(project_id)
    return incoming


def parsed(project_id: int, kind: str, key: str, data: bytes, remote: str) -> Incoming:
    """The decompressed body read, scrubbed and grouped (the digest's work, for a queued
    envelope); ProtocolError when it cannot be."""
    incoming = Incoming(project_id, key, remote)
    if kind == "store":
        incoming.events.append(event_of(data))
    else:
        read_envelope(incoming, data)
    incoming.groups = [grouping.grouping(event) for event in incoming.events]
    return incoming


def limited(project_id: int) -> str:
    """Why the project's request is refused before it is stored, or "". Counted only once
    it was read: a request handed on to Django is not counted twice."""
    if not LIMIT.allow(str(project_id)):
        return "rate_limited"
    if disk_low():  # queued envelopes take the disk too
        return "disk_full"
    return ""


def event_of(data: bytes, envelope_id: str = "") -> dict[str, Any]:
    """The event, scrubbed, with its id: its own, else its envelope's, else a new one."""
    if len(data) > protocol.MAX_EVENT:
        raise ProtocolError(f"an event is over {protocol.MAX_EVENT // 1024} KiB", 413)
    event: dict[str, Any] = scrub.scrubbed(protocol.json_object(data, "event"))
    event["event_id"] = event_id(event.get("event_id")) or envelope_id or uuid.uuid4().hex
    return event


def event_id(found: object) -> str:
    """The id as stored (32 hex digits, no dashes), or "" when it is none."""
    if not isinstance(found, str):
        return ""
    found = found.replace("-", "").lower()
    return found if len(found) == 32 and all(c in "0123456789abcdef" for c in found) else ""


def read_envelope(incoming: Incoming, data: bytes) -> None:
    header, items = protocol.envelope(data)
    envelope_id = event_id(header.get("event_id"))
    attachments: list[Item] = []
    for item in items:
        if item.type == "event":
            incoming.events.append(event_of(item.payload, envelope_id))
        elif item.type == "attachment":
            if len(item.payload) > protocol.MAX_ATTACHMENT:
                raise ProtocolError(
                    f"an attachment is over {protocol.MAX_ATTACHMENT // 1024} KiB", 413
                )
            attachments.append(item)
        else:
            counted(incoming.tallies, item)  # unknown types are skipped, as Sentry does
    # An attachment belongs to the envelope's event (its header says which), or to the
    # only event sent with it.
    alone = incoming.events[0]["event_id"] if len(incoming.events) == 1 else ""
    for item in attachments:
        target = event_id(item.headers.get("event_id")) or envelope_id or alone
        if not target:
            raise ProtocolError("an attachment does not say which event it belongs to")
        incoming.attachments.append((target, item))


def counted(tallies: Tallies, item: Item) -> None:
    """Items onwatch counts rather than stores."""
    if item.type == "client_report":
        report = protocol.json_object(item.payload, "client report")
        for d in _list(report.get("discarded_events")):
            if isinstance(d, dict) and isinstance(d.get("quantity"), int):
                what = f"{d.get('reason')} ({d.get('category')})"[:200]
                tallies["sdk-dropped", what] += max(0, d["quantity"])
    elif item.type == "session":
        sessions(tallies, protocol.json_object(item.payload, "session"))
    elif item.type == "sessions":
        aggregates(tallies, protocol.json_object(item.payload, "sessions"))
    elif item.type == "check_in":
        check_in = protocol.json_object(item.payload, "check-in")
        tallies["check-ins", str(check_in.get("monitor_slug") or "")[:200]] += 1
    elif item.type == "transaction":
        tallies["transactions", ""] += 1


def release_of(data: dict[str, Any]) -> str:
    attrs = data.get("attrs")
    return str(attrs.get("release") or "")[:200] if isinstance(attrs, dict) else ""


def sessions(tallies: Tallies, session: dict[str, Any]) -> None:
    release = release_of(session)
    if session.get("init") is True:
        tallies["sessions", release] += 1
    if session.get("status") in ("crashed", "abnormal"):
        tallies["crashed", release] += 1


def aggregates(tallies: Tallies, data: dict[str, Any]) -> None:
    release = release_of(data)
    for bucket in _list(data.get("aggregates")):
        if not isinstance(bucket, dict):
            continue
        started = sum(_int(bucket.get(k)) for k in ("exited", "errored", "crashed", "abnormal"))
        tallies["sessions", release] += started
        tallies["crashed", release] += _int(bucket.get("crashed")) + _int(bucket.get("abnormal"))


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


_disk: tuple[float, bool] = (float("-inf"), False)
_disk_lock = threading.Lock()


def disk_low() -> bool:
    """Whether the data folder's disk is under ERRORS_MIN_FREE_MB, looked at once a second."""
    global _disk
    now = time.monotonic()
    with _disk_lock:
        if now - _disk[0] >= 1.0:
            free = shutil.disk_usage(settings.DATA_DIR).free
            _disk = (now, free < settings.ERRORS_MIN_FREE_MB * 2**20)
        return _disk[1]


def write(taken: Incoming | Waiting, now: datetime) -> Answer:
    """Store (or queue) what was accepted, or refuse it; in the caller's transaction."""
    return write_all([taken], now)[0]


def write_all(taken: list[Incoming | Waiting], now: datetime) -> list[Answer]:
    """Store (or queue, for the digest) a batch of what was accepted, refusing what cannot
    be taken; in the caller's transaction."""
    from onwatch.errors import services

    answers: list[Answer] = [OK] * len(taken)
    read = [(i, t) for i, t in enumerate(taken) if isinstance(t, Incoming)]
    waiting = [(i, t) for i, t in enumerate(taken) if isinstance(t, Waiting)]
    found = services.take_all([t for _, t in read], now)
    found += services.queue_all([t for _, t in waiting], now)
    for (i, _), e in zip([*read, *waiting], found, strict=True):
        if e is not None:
            answers[i] = refusal(e.status, str(e), e.reason, e.retry_after)
    return answers


def refusal(status: int, message: str, reason: str = "", retry_after: int = 0) -> Answer:
    """The answer to what cannot be stored: the reason in the body and in X-Sentry-Error
    (where Sentry's SDKs and Relay read it), on the fast route as through Django."""
    body = json.dumps({"detail": message}).encode()
    headers = protocol.rate_limits(retry_after, reason) if status == 429 else ()
    return Answer(status, body, (*headers, (ERROR_HEADER, body)))
