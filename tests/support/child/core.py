"""Child-process functions on onwatch's own tables (see tests.support.child)."""

from __future__ import annotations

from django.core.management import call_command


def migrate_back(app: str, to: str) -> None:
    """As before an upgrade: `app` migrated back to migration `to`."""
    call_command("migrate", app, to, verbosity=0)
