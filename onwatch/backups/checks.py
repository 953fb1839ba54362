"""Is a source ready to be backed up? Asked when a source is saved, so a wrong password,
a missing database or a dump tool older than the server is explained before the first run
rather than by a failed one. Each problem is one line for people; none means ready.

Fast and side-effect free: each kind (backups/kinds/) connects (10 s timeouts), reads
versions and privileges, and looks at files; it creates, locks and writes nothing.
"""

from __future__ import annotations

from onwatch.backups import kinds
from onwatch.backups.models import Source


def check_source(source: Source) -> list[str]:
    try:
        kind = kinds.kind_of(source)
    except kinds.UnknownKind as e:
        return [str(e)]
    return kind.check(source)
