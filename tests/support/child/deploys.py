"""Child-process functions for pipeline tests (see tests.support.child)."""

from __future__ import annotations

from onwatch.core.models import Organization


def make_org(name: str) -> None:
    """The organization the `onwatch services` and `pipelines` commands work in."""
    Organization.objects.get_or_create(name=name)
