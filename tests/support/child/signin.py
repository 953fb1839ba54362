"""Child-process functions on sign-in (see tests.support.child): the addresses that the
audit log and the sign-in lock-out counted wrong passwords against."""

from __future__ import annotations

import json

from django.db import connection

from onwatch.core.models import AuditEntry


def print_failed_sign_in_addresses() -> None:
    """{"audit": [ip of each failed sign-in, oldest first], "lockout": [each address
    allauth counts wrong passwords for]} (its counters live in the database cache)."""
    audit = AuditEntry.objects.filter(action="sign-in-failed").order_by("seq")
    with connection.cursor() as c:
        c.execute("SELECT cache_key FROM onwatch_cache WHERE cache_key LIKE %s", ["%:ip:%"])
        keys = [row[0] for row in c.fetchall() if "login_failed" in row[0]]
    print(
        json.dumps(
            {
                "audit": [e.ip for e in audit],
                "lockout": sorted({key.rsplit(":ip:", 1)[1] for key in keys}),
            }
        )
    )
