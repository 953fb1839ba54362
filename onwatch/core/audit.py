"""The audit log: append-only, hash-chained, verifiable with `onwatch audit verify`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from onwatch.core.models import AuditEntry, Organization

GENESIS = "0" * 64
# Any constant works; it names the advisory lock that serialises appends on PostgreSQL.
_PG_LOCK = 0x6F6E7761


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
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


def actor_of(request: HttpRequest | None) -> tuple[str, str]:
    if request is None:
        return "system", ""
    user = getattr(request, "user", None)
    who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    return who, request.META.get("REMOTE_ADDR", "")


def record(
    action: str,
    *,
    request: HttpRequest | None = None,
    actor: str | None = None,
    org: Organization | None = None,
    target: str = "",
    **data: Any,
) -> AuditEntry:
    who, ip = actor_of(request)
    if org is None and request is not None:
        org = getattr(request, "org", None)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK])
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
        entry.hash = entry_hash(entry.prev_hash, _fields(entry))
        entry.save()
    return entry


@dataclass
class Verdict:
    checked: int
    first_bad: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify() -> Verdict:
    prev, expected_seq, checked = GENESIS, 1, 0
    for e in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        if e.seq != expected_seq:
            return Verdict(checked, expected_seq, f"entry {expected_seq} is missing")
        if e.prev_hash != prev:
            return Verdict(checked, e.seq, f"entry {e.seq} does not follow entry {e.seq - 1}")
        if entry_hash(e.prev_hash, _fields(e)) != e.hash:
            return Verdict(checked, e.seq, f"entry {e.seq} was changed after it was written")
        prev, expected_seq, checked = e.hash, expected_seq + 1, checked + 1
    return Verdict(checked, None, "")
