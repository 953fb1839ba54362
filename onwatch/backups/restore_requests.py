"""Restores asked for in the UI: where they go, and the job that runs restores.restore
with its progress in the job log (services.request_restore makes the row and the job).

The job's payload says where to restore (a database name and which server, or a path),
never how to sign in there: the password is read from the source when the job runs, so
it is never stored outside an encrypted column.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from django.utils import timezone

from onwatch.backups import restic, restores, targets
from onwatch.backups.kinds import kind_of
from onwatch.backups.models import Outcome, Restore, Source
from onwatch.core.jobs import JobContext, JobFailed
from onwatch.core.lazy import lazy_module
from onwatch.core.mariadb import MariaDBError
from onwatch.core.models import Job

if TYPE_CHECKING:
    import psycopg
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")

SOURCE_SERVER, SCRATCH_SERVER = "source", "scratch"


@dataclass(frozen=True)
class Login:
    host: str
    port: int
    user: str
    password: str
    database: str  # the one to connect to for looking around (not the new one)


@dataclass(frozen=True)
class Target:
    """A new database (name, on the source's or the scratch server) or a new path."""

    database: str = ""
    server: str = SOURCE_SERVER
    path: str = ""

    def payload(self) -> dict[str, str]:
        if self.path:
            return {"path": self.path}
        return {"database": self.database, "server": self.server}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Target:
        if payload.get("path"):
            return cls(path=str(payload["path"]))
        return cls(database=str(payload.get("database", "")), server=str(payload.get("server", "")))


def taken_at(text: str) -> datetime | None:
    """When a snapshot was taken: restic's RFC 3339 times carry nanoseconds, which Python
    does not read."""
    try:
        return datetime.fromisoformat(re.sub(r"\.\d+", "", text))
    except ValueError:
        return None


def login(source: Source, server: str) -> Login:
    """How to reach the server a database restore goes to."""
    default = kind_of(source).DEFAULT_PORT
    if server == SCRATCH_SERVER and source.scratch_url:
        u = urlsplit(source.scratch_url)
        return Login(
            host=u.hostname or "127.0.0.1",
            port=u.port or default,
            user=unquote(u.username or ""),
            password=unquote(u.password or ""),
            database=u.path.lstrip("/"),
        )
    return Login(
        host=source.host or "127.0.0.1",
        port=source.port or default,
        user=source.username,
        password=source.password or "",
        database=source.database,
    )


def shown(source: Source, target: Target) -> str:
    """The target for people: no password."""
    if target.path:
        return target.path
    where = login(source, target.server)
    which = " (the drill server)" if target.server == SCRATCH_SERVER else ""
    return f"database {target.database} on {where.host}:{where.port}{which}"


def restore_to(source: Source, target: Target) -> str:
    """What restores.restore takes: a path, or a URL naming the new database."""
    if target.path:
        return target.path
    where = login(source, target.server)
    auth = quote(where.user, safe="")
    if where.password:
        auth += ":" + quote(where.password, safe="")
    scheme = kind_of(source).SCHEMES[0]
    return f"{scheme}://{auth}@{where.host}:{where.port}/{target.database}"


def target_taken(source: Source, target: Target) -> bool:
    """Whether the database or path is there already (the restore itself refuses one too,
    later). Raises psycopg.Error or MariaDBError."""
    return kind_of(source).target_taken(source, target)


def path_taken(target: Target) -> bool:
    return bool(target.path) and Path(target.path).exists()


def failures() -> tuple[type[Exception], ...]:
    """What a restore can fail with; a function, so psycopg is imported only when a
    restore fails, not by every process that imports this module."""
    return (
        restores.RestoreRefused,
        targets.RestoreFailed,
        restic.ResticError,
        psycopg.Error,
        MariaDBError,
        sqlite3.Error,
        OSError,
    )


def run(ctx: JobContext) -> dict[str, Any]:
    """The backups.restore job: the chosen snapshot into its new target."""
    restore = (
        Restore.objects.select_related("plan__source", "plan__org", "repository")
        .filter(pk=ctx.job.payload.get("restore"))
        .first()
    )
    if restore is None:
        raise JobFailed("the restore was removed with its plan; nothing to do")
    plan, source = restore.plan, restore.plan.source
    target = Target.from_payload(ctx.job.payload)
    Restore.objects.filter(pk=restore.pk).update(started_at=timezone.now())
    started = time.monotonic()
    try:
        if restore.repository is None:
            raise restores.RestoreRefused("the repository was removed; choose another copy")
        ctx.log(f"looking for snapshot {restore.snapshot_id[:8]} in {restore.repository.name}")
        chosen = restores.choose(plan, restore.snapshot_id, restore.repository)
        taken = taken_at(chosen.snapshot.time)
        when = (
            f"{timezone.localtime(taken):%Y-%m-%d %H:%M:%S %Z}" if taken else "at an unknown time"
        )
        ctx.log(f"found it: taken {when}")
        ctx.progress(0.1)
        ctx.log(f"restoring into {restore.target}; this can take a while for big backups")
        if target.path:
            Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        done = restores.restore(plan, chosen, restore_to(source, target), restore.requested_by)
    except failures() as e:
        error = scrub(str(e).strip() or type(e).__name__, source)
        ctx.log(f"failed: {error}")
        ended_badly(
            ctx, restore, time.monotonic() - started, error, isinstance(e, restores.LeftBehind)
        )
        raise JobFailed(f"Restore of {plan.name} into {restore.target} failed: {error}") from None
    ctx.log(f"restored into {restore.target} in {done.seconds:.1f} s")
    finish(restore, Outcome.SUCCEEDED, done.seconds, "")
    return {"restore": restore.pk, "snapshot": done.snapshot_id, "seconds": round(done.seconds, 3)}


def ended_badly(
    ctx: JobContext, restore: Restore, seconds: float, error: str, left_behind: bool
) -> None:
    """A restore stopped by a cancel is cancelled, not failed; either way its row keeps
    what the clean-up said (what is left, how to remove it)."""
    if ctx.cancelled.is_set():
        who = Job.objects.filter(pk=ctx.job.pk).values_list("cancel_requested_by", flat=True)
        error = f"cancelled by {who.first() or 'someone'}; {error}"
        finish(restore, Outcome.CANCELLED, seconds, error, left_behind)
    else:
        finish(restore, Outcome.FAILED, seconds, error, left_behind)


def scrub(text: str, source: Source) -> str:
    """Tools' messages may echo a connection string; no password reaches a log."""
    for secret in (source.password, login(source, SCRATCH_SERVER).password):
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def finish(
    restore: Restore, state: str, seconds: float, error: str, left_behind: bool = False
) -> None:
    Restore.objects.filter(pk=restore.pk).update(
        state=state,
        finished_at=timezone.now(),
        seconds=seconds,
        error=error,
        left_behind=left_behind,
    )
