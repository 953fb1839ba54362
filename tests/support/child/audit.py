"""Child-process functions on the audit log (see tests.support.child): entries written
the way onwatch writes them, and changes made behind its back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management import call_command
from django.db import connection

from onwatch.core import audit
from onwatch.core.audit import GENESIS, _fields, entry_hash
from onwatch.core.keyring import get_keyring
from onwatch.core.models import AuditEntry


def write_entries(n: int) -> None:
    for i in range(n):
        audit.record("thing-done", actor=f"person{i}", target=str(i))


def run_sql(statement: str) -> None:
    """As someone with database access would, past onwatch."""
    with connection.cursor() as c:
        c.execute(statement)


def rewrite_chain(actor: str) -> None:
    """Everything a database writer can do: change the actors and recompute every hash
    the way an unkeyed chain computes them."""
    prev = GENESIS
    for e in AuditEntry.objects.order_by("seq"):
        e.actor = actor
        h = entry_hash(prev, _fields(e))
        with connection.cursor() as c:
            c.execute(
                "UPDATE core_auditentry SET actor = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                [actor, prev, h, e.seq],
            )
        prev = h


def install_unkeyed_log() -> None:
    """An install from before the key: its tables as they were, three unkeyed entries."""
    call_command("migrate", "core", "0001", verbosity=0)
    prev = GENESIS
    for seq in (1, 2, 3):
        at = datetime(2026, 1, seq, 9, 0, tzinfo=UTC)
        fields: dict[str, Any] = {
            "seq": seq, "at": at.isoformat(), "org": None, "actor": "old@x.io",
            "action": "thing-done", "target": "", "ip": "", "data": {},
        }  # fmt: skip
        h = entry_hash(prev, fields)
        with connection.cursor() as c:
            c.execute(
                "INSERT INTO core_auditentry (seq, at, actor, action, target, ip, data, "
                "prev_hash, hash) VALUES (%s, %s, 'old@x.io', 'thing-done', '', '', "
                "'{}', %s, %s)",
                [seq, connection.ops.adapt_datetimefield_value(at), prev, h],
            )
        prev = h
    # Its key file, from before the audit log was keyed: no marker.
    ring = get_keyring()
    ring.audit_keyed = False
    ring.save()


def pass_off_as_unkeyed(actor: str) -> None:
    """Rewrite every entry's actor and pass the log off as one from before the key: hashes
    recomputed the unkeyed way, scheme 1, no key id and no seals."""
    prev = GENESIS
    for e in AuditEntry.objects.order_by("seq"):
        e.actor = actor
        h = entry_hash(prev, _fields(e))
        with connection.cursor() as c:
            c.execute(
                "UPDATE core_auditentry SET actor = %s, prev_hash = %s, hash = %s, scheme = 1, "
                "key_id = NULL, seals = '{}' WHERE seq = %s",
                [actor, prev, h, e.seq],
            )
        prev = h


def unmark_keyed_log() -> None:
    """The key file as the release before the note wrote it: no "audit log keyed" mark."""
    ring = get_keyring()
    ring.audit_keyed = False
    ring.save()
