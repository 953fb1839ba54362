"""Child-process functions on monitors (see tests.support.child)."""

from __future__ import annotations

import json
from typing import Any

from onwatch.core.models import Organization
from onwatch.uptime.models import Monitor


def add_monitor(org_name: str, name: str, kind: str, config: Any) -> None:
    # Any: the encrypted field is typed by what it stores (text), set by what it holds.
    org, _ = Organization.objects.get_or_create(name=org_name)
    Monitor.objects.create(org=org, name=name, kind=kind, config=config)


def print_monitor_config(name: str) -> None:
    """The monitor's settings as JSON on stdout, decrypted as onwatch reads them."""
    print(json.dumps(Monitor.objects.get(name=name).config))
