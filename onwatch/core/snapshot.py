"""Reads that see the database as of one moment, so that figures and the rows they count
agree while writers commit between the two reads (a check landing mid-page)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def one_snapshot() -> Iterator[None]:
    """A read-only transaction around the reads inside: REPEATABLE READ on PostgreSQL, a
    deferred one on SQLite (its snapshot is taken at the first read). Deferred on purpose:
    onwatch's SQLite transactions are IMMEDIATE, and a page must not wait for the write
    lock. Inside a transaction already, its own isolation applies.

    Reads only: Django does not know about this transaction, so a `transaction.atomic()`
    inside fails loudly (a nested BEGIN) rather than writing half outside it."""
    if connection.in_atomic_block or not connection.get_autocommit():
        yield
        return
    if connection.vendor == "postgresql":
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    else:
        begin = "BEGIN DEFERRED"
    with connection.cursor() as cur:
        cur.execute(begin)
    try:
        yield
    finally:
        # COMMIT, not ROLLBACK: should a write ever slip in on SQLite (PostgreSQL refuses
        # it: READ ONLY), it is kept, never silently undone.
        with connection.cursor() as cur:
            cur.execute("COMMIT")
