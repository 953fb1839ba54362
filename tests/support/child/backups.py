"""Child-process functions on backups (see tests.support.child)."""

from __future__ import annotations

from typing import Any

from onwatch.backups import services
from onwatch.backups.runs import run_backup
from onwatch.core.models import Organization


def make_plan(kind: str, repo: str, source: dict[str, Any]) -> None:
    """A plan and one good backup of it, made the way onwatch makes them."""
    org = Organization.objects.create(name="Acme")
    repository = services.add_repository(org, "local", repo, provider="here")
    plan = services.add_plan(
        services.add_source(org, "app", kind, **source), "nightly", [repository]
    )
    run = run_backup(plan, print)
    assert run.state == "succeeded", run.error
