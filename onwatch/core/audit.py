"""The audit log: append-only, hash-chained under a key from the key file, its newest entry
witnessed by a head file outside the database; `onwatch audit verify` checks all three.

Entries from before the key (scheme 1) carry a hash anyone can recompute. Once the key file
is marked keyed (from the start on a new install, by seal_legacy() after an upgrade), such
an entry can only be a forgery, and nothing is ever sealed again."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from onwatch.core import audit_head, keyring
from onwatch.core.audit_head import Head, HeadFileError, head_path, read_head
from onwatch.core.audit_seal import (
    ERASED,
    SCHEME_KEYED,
    SCHEME_LEGACY,
    erase_field,
    intact,
    personal_fields,
    seal,
)
from onwatch.core.keyring import KeyringError
from onwatch.core.models import AuditEntry, Organization

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# Any constant works; it names the advisory lock that serialises appends on PostgreSQL.
_PG_LOCK = 0x6F6E7761


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The unkeyed hash of entries written before the chain was keyed (scheme 1)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def _fields(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.isoformat(),
        "org": e.org_id,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "ip": e.ip,
        "data": e.data,
    }


def _serialise() -> None:
    """Inside a transaction: one writer of the chain at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK])


def actor_of(request: HttpRequest | None) -> tuple[str, str]:
    if request is None:
        return "system", ""
    user = getattr(request, "user", None)
    who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    return who, request.META.get("REMOTE_ADDR", "")


@dataclass(frozen=True)
class Actor:
    """Who makes a change, as its audit entry names them: a person through the pages or a
    token (with the address the request came from), or a command run on the server."""

    name: str
    ip: str = ""
    # The account behind a person's change (None for the command line and onwatch itself).
    user: Any = None

    @classmethod
    def of(cls, request: HttpRequest) -> Actor:
        who, ip = actor_of(request)
        user = getattr(request, "user", None)
        return cls(who, ip, user if user is not None and user.is_authenticated else None)

    def record(self, action: str, org: Organization, target: str, **data: Any) -> AuditEntry:
        return record(action, actor=self, org=org, target=target, **data)


CLI = Actor("cli")
SYSTEM = Actor("system")


def record(
    action: str,
    *,
    request: HttpRequest | None = None,
    actor: str | Actor | None = None,
    org: Organization | None = None,
    target: str = "",
    **data: Any,
) -> AuditEntry:
    who, ip = actor_of(request)
    if isinstance(actor, Actor):
        # A change made through services.py: the actor already holds name and address.
        who, ip, actor = actor.name, actor.ip, None
    if org is None and request is not None:
        org = getattr(request, "org", None)
    with transaction.atomic():
        _serialise()
        last = AuditEntry.objects.order_by("-seq").only("seq", "hash").first()
        entry = AuditEntry(
            seq=(last.seq + 1) if last else 1,
            at=timezone.now(),
            org=org,
            actor=actor or who,
            action=action,
            target=target,
            ip=ip,
            data=json.loads(json.dumps(data, default=str)),
            prev_hash=last.hash if last else GENESIS,
        )
        seal(entry)
        entry.save()
        # Only a committed entry may become the head: one rolled back with its
        # transaction would otherwise look deleted.
        transaction.on_commit(partial(audit_head.advance, Head(entry.seq, entry.hash)))
    return entry


@dataclass
class Verdict:
    checked: int
    first_bad: int | None
    reason: str
    # Why the chain could not be checked in full, though nothing was found wrong.
    unchecked: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.unchecked


@dataclass
class _Walk:
    prev: str = GENESIS
    seq: int = 0
    keyed: bool = False

    def step(self, e: AuditEntry) -> None:
        self.prev, self.seq = e.hash, e.seq
        self.keyed = self.keyed or e.scheme == SCHEME_KEYED


def _keyed_problem(e: AuditEntry) -> str | None:
    try:
        return None if intact(e) else f"entry {e.seq} was changed after it was written"
    except KeyringError:
        return (
            f"entry {e.seq} names key {e.key_id}, which the key file lacks: it was changed "
            "after it was written, or the key file is not this database's"
        )


def _entry_problem(e: AuditEntry, walk: _Walk, head: Head | None) -> str | None:
    if e.seq != walk.seq + 1:
        return f"entry {walk.seq + 1} is missing"
    if e.prev_hash != walk.prev:
        return f"entry {e.seq} does not follow entry {e.seq - 1}"
    if e.scheme == SCHEME_KEYED:
        problem = _keyed_problem(e)
    # An unkeyed entry after a keyed one, or in a log marked keyed, is a forgery: sealing
    # never goes backwards.
    elif walk.keyed or e.scheme != SCHEME_LEGACY or entry_hash(e.prev_hash, _fields(e)) != e.hash:
        problem = f"entry {e.seq} was changed after it was written"
    else:
        problem = None
    if problem is None and head is not None and e.seq == head.seq and e.hash != head.hash:
        problem = (
            f"entry {e.seq} is not the entry onwatch wrote as number {e.seq}: the log was "
            "rewritten up to there"
        )
    return problem


def _tail_verdict(walk: _Walk, head: Head | None) -> Verdict:
    # Keyed or not: without the head, a log rewritten or cut short cannot be told apart.
    if head is None and walk.seq:
        return Verdict(
            walk.seq,
            None,
            "",
            unchecked=f"the head file {head_path()} is missing, so newest entries deleted, or "
            "the whole log rewritten, would go unnoticed; put it back from this machine's "
            "backup, or point ONWATCH_AUDIT_HEAD_FILE at it",
        )
    if head is None or head.seq <= walk.seq:
        return Verdict(walk.seq, None, "")
    first = walk.seq + 1
    which = f"entry {first} is" if first == head.seq else f"entries {first} to {head.seq} are"
    ends = f"ends at entry {walk.seq}" if walk.seq else "is empty"
    return Verdict(
        walk.seq,
        first,
        f"{which} missing from the end (onwatch wrote up to entry {head.seq}; the log now "
        f"{ends}): they were deleted, or the database was put back from an older copy "
        "(if on purpose, run `onwatch audit accept-restore`)",
    )


def verify(with_head: bool = True) -> Verdict:
    """With the head file, the whole check: also whether the key file carries the keyed
    mark it should (without it the walk cannot tell old entries from forged ones)."""
    try:
        head = read_head() if with_head else None
        walk = _Walk(keyed=keyring.get_keyring().audit_keyed)
    except (HeadFileError, KeyringError) as err:
        return Verdict(0, None, "", unchecked=str(err))
    for e in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        problem = _entry_problem(e, walk, head)
        if problem is not None:
            bad = e.seq if e.seq == walk.seq + 1 else walk.seq + 1
            return Verdict(walk.seq, bad, problem)
        walk.step(e)
    if not with_head:
        return Verdict(walk.seq, None, "")
    verdict = _tail_verdict(walk, head)
    if verdict.ok:
        verdict.unchecked = unmarked_problem()
    return verdict


UNMARKED = "audit-key-file-not-marked"


def unmarked_problem() -> str:
    """Why the log cannot be fully checked when the key file lacks the keyed mark though
    every entry is sealed with the key ("" when nothing is wrong). Cheap: the audit page
    shows it on every load."""
    ring = keyring.get_keyring()
    if ring.audit_keyed or not AuditEntry.objects.exists():
        return ""
    if AuditEntry.objects.filter(scheme=SCHEME_LEGACY).exists():
        return ""  # not sealed yet (before `onwatch migrate`), or a log that must not be
    note = AuditEntry.objects.filter(action=UNMARKED).order_by("-seq").first()
    why = note.data.get("reason") if note else "onwatch has not written the mark yet"
    return (
        f"the key file {ring.path} could not be marked as sealing the audit log, because "
        f"{why}; until it is, an entry forged to look older than the key would pass as "
        f"genuine. Fix: let onwatch write to {ring.path.parent}, then run `onwatch migrate` "
        "once"
    )


def mark_keyed_or_note() -> None:
    """Mark the key file keyed; when it cannot take the mark (a read-only folder, say),
    onwatch still starts, and the log records why: `unmarked_problem` says so to people
    until the mark is written."""
    try:
        keyring.mark_audit_keyed()
    except keyring.UnmarkedKeyFile as e:
        # No log line here: `onwatch migrate` and `up` print the one warning people need.
        last = AuditEntry.objects.filter(action=UNMARKED).order_by("-seq").first()
        if last is None or last.data.get("reason") != e.why:
            record(UNMARKED, actor="system", reason=e.why)


def accept_restored(actor: str = "cli") -> tuple[Head | None, AuditEntry]:
    """After an older copy of the database was put back on purpose: the log records which
    entry the head file named, and that new entry becomes the head.

    Refused while the log itself does not verify: accepting cannot mend a changed entry.
    """
    chain = verify(with_head=False)
    if not chain.ok:
        raise ValueError(
            f"the audit log itself does not verify ({chain.reason}); accepting it as it is "
            "would not mend that"
        )
    try:
        old = read_head()
    except HeadFileError:
        old = None
    # Cleared first: the head never moves past an entry that is gone, by design.
    audit_head.clear()
    entry = record(
        "audit-log-restored",
        actor=actor,
        previous_entry=old.seq if old else None,
        previous_hash=old.hash if old else "",
    )
    return old, entry


def seal_legacy() -> int:
    """Seal an intact chain of entries written before the key (scheme 1) with the key, then
    mark the key file keyed; once it is marked, this never seals anything again.

    Run by `onwatch migrate`. The old unkeyed hashes stopped no database writer, so nothing
    is lost by replacing them; what is gained is that those entries too are covered by the
    head file and can have a person erased from them. A chain that does not verify is left
    exactly as it is: it is evidence.
    """
    if keyring.get_keyring().audit_keyed:
        # Any scheme 1 entry now is a forgery: sealing it would make it pass as genuine.
        return 0
    with transaction.atomic():
        _serialise()
        entries = list(AuditEntry.objects.order_by("seq"))
        legacy = [e for e in entries if e.scheme == SCHEME_LEGACY]
        problem = _unsealable(entries, legacy)
        if problem:
            log.warning("audit log: not sealed with the key, %s", problem)
            return 0
        if legacy:
            _seal_all(legacy)
        transaction.on_commit(mark_keyed_or_note)
    return len(legacy)


def _unsealable(entries: list[AuditEntry], legacy: list[AuditEntry]) -> str:
    verdict = verify()
    if verdict.first_bad is not None:
        return f"as it does not verify: {verdict.reason}"
    if legacy and len(legacy) < len(entries):
        # Resealing would rewrite keyed entries and drop their erasures; marking would
        # make the old ones look forged. The head file still guards this log.
        return "as old unkeyed entries are followed by keyed ones"
    return ""


def _seal_all(entries: list[AuditEntry]) -> None:
    prev = GENESIS
    for e in entries:
        e.prev_hash = prev
        seal(e)
        prev = e.hash
    fields = ["scheme", "key_id", "seals", "prev_hash", "hash"]
    AuditEntry.objects.bulk_update(entries, fields, batch_size=500)
    transaction.on_commit(partial(audit_head.reset, Head(entries[-1].seq, prev)))


def _names_person(value: Any, wanted: list[re.Pattern[str]]) -> bool:
    if value == ERASED:
        return False
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return any(w.search(text) for w in wanted)


def _whole(identifier: str) -> re.Pattern[str]:
    # Whole names and addresses only: 10.0.0.1 is not in 10.0.0.12, nor al@x.io in val@x.io.
    return re.compile(rf"(?<![\w.@-]){re.escape(identifier)}(?![\w@-]|\.\w)", re.IGNORECASE)


def erase_person(*identifiers: str, actor: str = "system") -> int:
    """Blank every audit field that names the person (a name, email or IP address).

    The chain still verifies afterwards: see audit_seal. Answers how many entries changed;
    the erasure is itself recorded, without naming the person.
    """
    names = [i.strip() for i in identifiers if i.strip()]
    if not names or any(len(n) < 3 for n in names):
        raise ValueError("name the person by a name, email or IP address of 3 characters or more")
    wanted = [_whole(n) for n in names]
    changed = []
    with transaction.atomic():
        _serialise()
        for e in AuditEntry.objects.filter(scheme=SCHEME_KEYED).order_by("seq"):
            found = [n for n, v in personal_fields(e).items() if _names_person(v, wanted)]
            for name in found:
                erase_field(e, name)
            if found:
                changed.append(e)
        fields = ["actor", "target", "ip", "data", "seals"]
        AuditEntry.objects.bulk_update(changed, fields, batch_size=500)
    if changed:
        record("personal-data-erased", actor=actor, entries=len(changed))
    return len(changed)
