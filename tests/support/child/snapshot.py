"""Child-process functions for reads in one snapshot (see tests.support.child): against
onwatch's own database, a WAL file on SQLite, where readers and a writer run at once."""

from __future__ import annotations

import json
import threading
from typing import Any

from django.db import connection
from django.utils import timezone


def _insert_and_commit(monitor_id: int) -> None:
    from onwatch.uptime.models import CheckResult

    try:
        CheckResult.objects.create(monitor_id=monitor_id, at=timezone.now(), ok=False)
    finally:
        connection.close()


def counts_around_a_commit() -> None:
    """Count one monitor's checks twice in one snapshot with a check committed between the
    two, and once after; prints the three counts and whether the writer had to wait."""
    from onwatch.core.models import Organization
    from onwatch.core.snapshot import one_snapshot
    from onwatch.uptime.models import CheckResult, Kind, Monitor

    org = Organization.objects.create(name="Acme")
    settings: dict[str, Any] = {"config": {"url": "https://shop.example"}}
    m = Monitor.objects.create(org=org, name="shop", kind=Kind.HTTP, **settings)
    CheckResult.objects.create(monitor=m, at=timezone.now(), ok=True)
    checks = CheckResult.objects.filter(monitor=m)
    with one_snapshot():
        before = checks.count()
        writer = threading.Thread(target=_insert_and_commit, args=(m.pk,))
        writer.start()
        writer.join(timeout=30)
        waited = writer.is_alive()
        during = checks.count()
    writer.join()
    print(json.dumps([before, during, checks.count(), waited]))
