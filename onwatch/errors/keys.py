"""Which key each project takes, checked before a request's body is decompressed or
parsed: a request with a wrong key costs a lookup, never the work its body could cause.

Looked up in the database and kept for a second per project (and forgotten at once when
this process changes a key), so a flood costs no query per request. This is the early
check; the spool checks again with what it reads for the quota (spooled.py, every tenth
of a second), and the writer in the transaction that stores, so a key revoked in another
process is refused within that tenth of a second.
"""

from __future__ import annotations

import hmac
import threading
import time

from onwatch.core.validators import MAX_ID
from onwatch.errors.models import Project
from onwatch.errors.protocol import ProtocolError

KEEP_SECONDS = 1.0
MAX_PROJECTS = 10_000  # made-up project ids must not grow memory forever

# project id: (when looked up, its key and whether it is revoked; None: no such project)
_known: dict[int, tuple[float, tuple[str, bool] | None]] = {}
_lock = threading.Lock()


def check(project_id: int, key: str | None) -> None:
    """Nothing when `key` is the project's valid key; else ProtocolError 401 or 403."""
    if key is None:
        raise ProtocolError("no key: send X-Sentry-Auth or ?sentry_key= (see the DSN)", 401)
    found = lookup(project_id)
    if found is None or not hmac.compare_digest(found[0].encode(), key.encode()):
        raise ProtocolError("unknown project or key: check the DSN", 403)
    if found[1]:
        raise ProtocolError("this project's key was revoked: use its new DSN", 403)


def lookup(project_id: int) -> tuple[str, bool] | None:
    now = time.monotonic()
    with _lock:
        cached = _known.get(project_id)
    if cached is not None and now - cached[0] < KEEP_SECONDS:
        return cached[1]
    found = _from_database(project_id)
    with _lock:
        _known[project_id] = (now, found)
        if len(_known) > MAX_PROJECTS:
            del _known[next(iter(_known))]
    return found


def _from_database(project_id: int) -> tuple[str, bool] | None:
    if not 0 < project_id <= MAX_ID:  # past the database's integers: no project
        return None
    row = Project.objects.filter(pk=project_id).values_list("public_key", "key_revoked").first()
    return (row[0], row[1]) if row is not None else None


def forget(project_id: int) -> None:
    """Look the project up again next time (its key changed)."""
    with _lock:
        _known.pop(project_id, None)


def forget_all() -> None:
    with _lock:
        _known.clear()
