"""The intake's spool (onwatch/core/ingest/spool.py): an envelope whose framing read is
appended, sealed, to this process's spool file and answered 200, without the database's
write lock; the digest (digest.py) stores it later and moves its cursor in the same
transaction. A refusal (rate limit, quota, full queue, low disk) is appended too, as a
record of its own, so the digest counts it on the project page.

The quota and the queue's depth are decided here, before the answer, from what the
digest has stored (read at most every REFRESH_SECONDS, with its cursors)
and what this process has spooled that the digest had not stored then. Another web
process's spooled records are not seen until digested: with several web processes a
project may pass its hourly quota by what the others hold at that moment (a second's
worth at most under load), and ERRORS_QUEUE_MAX holds for each process.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import shutil
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import DatabaseError, connection

from onwatch.core.ingest import Answer, spool
from onwatch.core.ingest.spool import Spool, SpoolFull
from onwatch.core.ingest.writer import failed
from onwatch.core.keyring import Keyring, get_keyring
from onwatch.errors.intake import OK, Waiting, refusal
from onwatch.errors.models import Project, SpoolCursor, Tally
from onwatch.errors.services import REASONS, RETRY, hour_of

log = logging.getLogger(__name__)

CONTEXT = b"errors.spool"  # what the seal is bound to, as an EncryptedTextField's context
KEY_ID = struct.Struct("<I")
NONCE = 12
REFRESH_SECONDS = 0.1


def folder() -> Path:
    return Path(settings.DATA_DIR) / "spool" / "errors"


@dataclass(frozen=True, slots=True)
class Entry:
    """A record read back: an envelope (`body`), or a refusal to count (`refused`)."""

    project_id: int
    received_at: datetime
    events: int
    remote_addr: str = ""
    encoding: str = ""
    body: bytes = b""
    refused: str = ""


def packed(entry: Entry) -> bytes:
    """The record's payload: a line of JSON, then the body; sealed with the keyring's key,
    since until it is read and scrubbed the body holds whatever secrets the SDK sent."""
    head = {
        "p": entry.project_id,
        "t": entry.received_at.timestamp(),
        "n": entry.events,
        "r": entry.remote_addr,
        "e": entry.encoding,
        "x": entry.refused,
    }
    return sealed(json.dumps(head).encode() + b"\n" + entry.body)


def unpacked(payload: bytes) -> Entry:
    """The entry of a record; ValueError (or KeyringError) when it is not one of ours."""
    head_line, _, body = opened(payload).partition(b"\n")
    head = json.loads(head_line)
    when = datetime.fromtimestamp(float(head["t"]), UTC)
    return Entry(
        int(head["p"]), when, int(head["n"]), str(head["r"]), str(head["e"]), body, str(head["x"])
    )


_ring: tuple[str, Keyring] | None = None


def ring() -> Keyring:
    """get_keyring, known by the key file's text: its Path comparison cost as much as
    the sealing."""
    global _ring
    path = str(settings.KEY_FILE)
    if _ring is None or _ring[0] != path:
        _ring = (path, get_keyring())
    return _ring[1]


def sealed(plain: bytes) -> bytes:
    keyring = ring()
    nonce = secrets.token_bytes(NONCE)
    key = keyring.keys[keyring.current]
    return KEY_ID.pack(keyring.current) + nonce + AESGCM(key).encrypt(nonce, plain, CONTEXT)


def opened(payload: bytes) -> bytes:
    key_id = KEY_ID.unpack_from(payload)[0]
    key = ring().keys.get(key_id)
    if key is None:
        raise ValueError(f"the keyring lacks key {key_id}, which sealed a spooled envelope")
    nonce = payload[KEY_ID.size : KEY_ID.size + NONCE]
    return AESGCM(key).decrypt(nonce, payload[KEY_ID.size + NONCE :], CONTEXT)


@dataclass(frozen=True, slots=True)
class Pending:
    """A record this process spooled that the digest has not stored yet."""

    name: str  # its file
    end: int  # the offset after it: stored once the file's cursor is there
    project_id: int
    hour: datetime
    events: int


class Backlog:
    """What this process spooled and the digest has not stored, and what the digest
    had stored of each project this hour when last looked (`base`)."""

    def __init__(self) -> None:
        self.pending: deque[Pending] = deque()
        self.events: Counter[tuple[int, datetime]] = Counter()
        self.base: dict[tuple[int, datetime], Known] = {}
        self.looked = float("-inf")

    def add(self, p: Pending) -> None:
        self.pending.append(p)
        self.events[p.project_id, p.hour] += p.events

    def refresh(self, project_id: int, hour: datetime) -> None:
        """The digest's cursors and this project's count, read in one snapshot, at most
        every REFRESH_SECONDS (or when the project is new here)."""
        now = time.monotonic()
        if now - self.looked < REFRESH_SECONDS and (project_id, hour) in self.base:
            return
        self.looked = now
        # Every project's count read after the cursors: what the digest stores in between
        # is counted twice until the next look (refused early, never taken over the
        # quota). Not in one transaction: on SQLite onwatch's begin IMMEDIATE, which waits
        # for the digest's write lock, the very wait the spool is there to spare.
        projects = {p for p, h in self.base if h == hour} | {project_id}
        try:
            self.forget_stored(cursors({p.name for p in self.pending}))
            self.base = stored_and_quota(projects, hour)
        finally:
            connection.close()  # a thread of the ingest layer: Django never closes it

    def forget_stored(self, at: dict[str, int]) -> None:
        while self.pending and self.pending[0].end <= at.get(self.pending[0].name, -1):
            p = self.pending.popleft()
            self.events[p.project_id, p.hour] -= p.events
        self.events = +self.events  # drop the zeros

    def denied(self, project_id: int, hour: datetime, key: str) -> str:
        """Why the key is refused as the database had it when last looked (a key revoked
        in another process since keys.py looked), or ""."""
        known = self.base[project_id, hour]
        if not hmac.compare_digest(known.key.encode(), key.encode()):
            return "unknown project or key: check the DSN"
        return "this project's key was revoked: use its new DSN" if known.revoked else ""

    def room(self, project_id: int, hour: datetime, events: int) -> str:
        """Why a request with this many events cannot be taken now, or ""."""
        if len(self.pending) >= settings.ERRORS_QUEUE_MAX:
            return "queue_full"
        known = self.base[project_id, hour]
        if events and known.stored + self.events[project_id, hour] >= known.quota:
            return "over_quota"
        return ""


def waiting() -> int:
    """Bytes of the spool the digest has not stored yet (a cut record's among them)."""
    names = spool.files(folder())
    at = cursors(set(names))
    sizes = {n: spool.size(folder() / n) for n in names}
    return sum(max(0, size - at.get(n, 0)) for n, size in sizes.items())


def cursors(names: set[str]) -> dict[str, int]:
    """Where the digest is in each file; a file it removed is stored whole."""
    if not names:
        return {}
    at = dict(SpoolCursor.objects.filter(name__in=names).values_list("name", "offset"))
    gone = {n: 2**62 for n in names if not (folder() / n).exists()}
    return {**at, **gone}


@dataclass(frozen=True, slots=True)
class Known:
    """A project as the database had it: its events stored this hour, its quota, key."""

    stored: int = 0
    quota: int = 0
    key: str = ""  # "": no such project (deleted)
    revoked: bool = False


def stored_and_quota(projects: set[int], hour: datetime) -> dict[tuple[int, datetime], Known]:
    tallies = Tally.objects.filter(project_id__in=projects, hour=hour, what="stored", detail="")
    stored = dict(tallies.values_list("project_id", "count"))
    rows = Project.objects.filter(pk__in=projects)
    found = {
        p: Known(stored.get(p, 0), quota, key, revoked)
        for p, quota, key, revoked in rows.values_list(
            "pk", "hourly_quota", "public_key", "key_revoked"
        )
    }
    return {(p, hour): found.get(p, Known()) for p in projects}


_spool: tuple[str, Spool] | None = None
_backlog = Backlog()
_lock = threading.Lock()  # the quota's count and the append go together


def appender() -> Spool:
    global _spool
    # Known by the setting's text (a test's own data folder): comparing Paths cost more
    # than the append itself.
    data = str(settings.DATA_DIR)
    if _spool is None or _spool[0] != data:
        _spool = (data, Spool(folder()))
    return _spool[1]


def forget() -> None:
    """Start this process's spool over, its files removed (tests: one data folder for a
    session of databases flushed between tests)."""
    global _spool, _backlog
    with _lock:
        if _spool is not None:
            _spool[1].close()
        _spool, _backlog = None, Backlog()
        shutil.rmtree(folder(), ignore_errors=True)


def take(w: Waiting, now: datetime) -> Answer:
    """Spool the envelope, or its refusal; the answer. Refused with 503 (nothing kept)
    when the database cannot say the project's quota or the spool cannot be written."""
    hour = hour_of(now)
    with _lock:
        try:
            _backlog.refresh(w.project_id, hour)
        except DatabaseError:
            log.exception("errors: the quota of project %d could not be read", w.project_id)
            return refusal(503, failed("event"))
        denied = _backlog.denied(w.project_id, hour, w.key)
        if denied:
            return refusal(403, denied)
        why = w.refused or _backlog.room(w.project_id, hour, w.events)
        if why:
            return refused(w, now, why)
        return spooled_envelope(w, now, hour)


def refused(w: Waiting, now: datetime, why: str) -> Answer:
    spooled_refusal(Entry(w.project_id, now, w.events, refused=why))
    retry = RETRY.get(why, 60) if why != "over_quota" else until_next_hour(now)
    return refusal(429, f"refused: {REASONS[why]}; send again later", why, retry)


def spooled_envelope(w: Waiting, now: datetime, hour: datetime) -> Answer:
    entry = Entry(w.project_id, now, w.events, w.remote_addr, w.encoding[:20], w.body)
    try:
        name, end = appender().append(packed(entry))
    except SpoolFull:
        log.exception("errors: an envelope of project %d could not be spooled", w.project_id)
        return refusal(503, NOT_SPOOLED)
    _backlog.add(Pending(name, end, w.project_id, hour, w.events))
    return OK


NOT_SPOOLED = (
    "onwatch could not store the event: writing to its data folder failed (is the disk "
    "full? see the server log); send it again"
)


def until_next_hour(now: datetime) -> int:
    return int((hour_of(now) + timedelta(hours=1) - now).total_seconds()) + 1


def spooled_refusal(entry: Entry) -> None:
    """A refusal kept for the digest to count; one that cannot be kept is logged (the
    request is refused all the same: nothing accepted is lost)."""
    try:
        appender().append(packed(entry))
    except SpoolFull:
        log.warning(
            "errors: a refusal (%s) of project %d could not be counted",
            entry.refused,
            entry.project_id,
        )
