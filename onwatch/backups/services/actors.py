"""Who makes a change, as the audit log records it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from onwatch.core import audit
from onwatch.core.models import AuditEntry, Organization


@dataclass(frozen=True)
class Actor:
    """A signed-in person and the address they came from, or a command ("cli") or
    onwatch itself ("system") with no address."""

    name: str
    address: str = ""

    @classmethod
    def of(cls, request: HttpRequest) -> Actor:
        name, address = audit.actor_of(request)
        return cls(name, address)

    def record(self, action: str, org: Organization, target: str, **data: Any) -> AuditEntry:
        return audit.record(
            action, actor=self.name, ip=self.address, org=org, target=target, **data
        )


CLI = Actor("cli")
# Code that calls services directly on nobody's behalf: seeds, benchmarks, tests' setup.
SYSTEM = Actor("system")
