"""The audit chain's head, kept in a file outside the database.

A database writer can delete the newest entries or replace the whole chain, and the rows
left behind still chain to one another. The head file is this machine's witness of the
newest entry it saw committed (its number and hash): `onwatch audit verify` requires that
entry to be in the chain, unchanged.

It lives in the data directory (ONWATCH_AUDIT_HEAD_FILE), not beside the key file, because
it is written with every entry and the key file may sit on a read-only mount; it is a plain
file, so a database backup or dump never carries it and a database put back from an older
copy shows up as entries missing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from onwatch.core.models import AuditEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


def head_path() -> Path:
    return Path(settings.AUDIT_HEAD_FILE)


class HeadFileError(Exception):
    """The head file exists but cannot be read as one. For people."""


def read_head() -> Head | None:
    path = head_path()
    try:
        doc = json.loads(path.read_text())
        return Head(int(doc["seq"]), str(doc["hash"]))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HeadFileError(f"the head file {path} cannot be read ({e.strerror})") from e
    except (ValueError, KeyError, TypeError):
        raise HeadFileError(f"the head file {path} is damaged (not onwatch head JSON)") from None


@contextmanager
def _locked() -> Iterator[None]:
    # Every onwatch process on this machine advances the same file: one at a time.
    path = head_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(head: Head) -> None:
    path = head_path()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-head-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": 1, "seq": head.seq, "hash": head.hash}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def advance(new: Head) -> None:
    """Move the head forward to a committed entry, never back.

    Entries commit out of order across processes, so an older one leaves the head alone.
    If the entry the head names is gone or changed, the head stays where it is: it is the
    evidence `audit verify` reports, and moving on would wipe it out.
    """
    try:
        with _locked():
            old = read_head()
            if old is not None and old.seq >= new.seq:
                return
            if old is not None and not AuditEntry.objects.filter(**vars(old)).exists():
                log.warning(
                    "audit log: entry %s is no longer the one onwatch wrote; the head file "
                    "keeps pointing at it. Run `onwatch audit verify`.",
                    old.seq,
                )
                return
            _write(new)
    except (OSError, HeadFileError) as e:
        # The entry itself is committed and stays; only its witness is missing, so say so.
        log.error("audit log: cannot update the head file %s: %s", head_path(), e)


def reset(head: Head) -> None:
    """Set the head outright (after sealing the old entries with the key)."""
    with _locked():
        _write(head)


def clear() -> None:
    with _locked():
        head_path().unlink(missing_ok=True)
