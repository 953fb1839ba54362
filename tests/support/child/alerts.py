"""Child-process functions on alert channels (see tests.support.child)."""

from __future__ import annotations

from onwatch.alerts.services import add_channel
from onwatch.core.models import Organization


def add_channels(org_name: str, urls: dict[str, str]) -> None:
    """Channels (name -> Apprise URL) added the way onwatch adds them: URLs encrypted."""
    org, _ = Organization.objects.get_or_create(name=org_name)
    for name, url in urls.items():
        add_channel(org, name, url)
