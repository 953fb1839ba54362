"""Who makes a change, as the audit log records it: the one `Actor` of core.audit."""

from __future__ import annotations

from onwatch.core.audit import CLI, SYSTEM, Actor

__all__ = ["CLI", "SYSTEM", "Actor"]
