"""Real restores: a chosen snapshot into a chosen target, never over existing data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from onwatch.backups import restic, targets
from onwatch.backups.kinds import kind_of
from onwatch.backups.models import Plan, Repository, RunCopy
from onwatch.backups.services import (
    drill_repository,
    left_out_copies,
    repo_of,
    verified_copies,
    why_left_out,
)
from onwatch.core import audit
from onwatch.core import mariadb as mariadb_tools
from onwatch.core.lazy import lazy_module

if TYPE_CHECKING:
    import psycopg
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")


class RestoreRefused(Exception):
    """The restore would be unsafe or cannot start; the message is for people."""


class LeftBehind(targets.RestoreFailed):
    """The restore failed and onwatch could not remove what it had half built."""


@dataclass(frozen=True)
class Chosen:
    repository: Repository
    snapshot: restic.Snapshot
    run_id: int | None = None


@dataclass(frozen=True)
class Restored:
    snapshot_id: str
    seconds: float


@dataclass(frozen=True)
class Verified:
    snapshot: restic.Snapshot
    copy: RunCopy


def verified_snapshots(plan: Plan, repository: Repository) -> list[Verified]:
    """The plan's snapshots still in the repository that onwatch verified, newest first.
    Every restore (UI, CLI) picks from these and nothing else: a cut-off dump's snapshot
    that could not be removed, or one onwatch has no record of, carries the same tags as a
    good one. Raises restic.ResticError."""
    copies = verified_copies(plan, repository)
    found = []
    for snap in reversed(restic.snapshots(repo_of(repository), [plan.tag])):
        # restic before 0.17 reports a new snapshot's short id, later ones the full id.
        copy = next((c for c in copies if snap.id.startswith(c.snapshot_id)), None)
        if copy is not None:
            found.append(Verified(snap, copy))
    return found


def choose(plan: Plan, snapshot: str = "", repository: Repository | None = None) -> Chosen:
    """The snapshot to restore: the verified one named (by id or prefix), else the newest
    verified one."""
    repository = repository or drill_repository(plan)
    if repository is None:
        raise RestoreRefused(f"{plan.name} has no copies; add a repository to it")
    verified = verified_snapshots(plan, repository)
    named = [v for v in verified if v.snapshot.id.startswith(snapshot)]
    if not named:
        raise RestoreRefused(not_verified(plan, repository, snapshot, verified))
    return Chosen(repository, named[0].snapshot, named[0].copy.run_id)


def not_verified(
    plan: Plan, repository: Repository, snapshot: str, verified: list[Verified]
) -> str:
    """Why nothing can be restored, and what can be instead."""
    if not snapshot:
        left = [why_left_out(c, d) for c, d in left_out_copies(plan, repository)]
        reason = f" ({left[0]})" if left else ""
        return f"{repository.name} holds no verified backup of {plan.name}{reason}; run one first"
    failed = next((c for c in bad_copies(plan, repository) if same(c.snapshot_id, snapshot)), None)
    drilled = [
        why_left_out(c, d)
        for c, d in left_out_copies(plan, repository)
        if same(c.snapshot_id, snapshot)
    ]
    why = f"{repository.name} holds no verified snapshot {snapshot!r} of {plan.name}"
    if failed:
        why = f"snapshot {snapshot} is from backup #{failed.run_id}, which failed; it is incomplete"
    elif drilled:
        why = drilled[0]
    if verified:
        newest = verified[0].snapshot
        return f"{why}; the newest verified one is {newest.short_id} of {newest.time[:16]}"
    return why


def bad_copies(plan: Plan, repository: Repository) -> list[RunCopy]:
    found = RunCopy.objects.filter(run__plan=plan, repository=repository, good=False)
    return list(found.exclude(snapshot_id=""))


def same(recorded: str, asked: str) -> bool:
    """One id is a prefix of the other (short ids, or a prefix typed by hand)."""
    return recorded.startswith(asked) or asked.startswith(recorded)


def shown_target(target: str) -> str:
    parts = urlsplit(target)
    if parts.password is None:
        return target
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}"))


def restore(plan: Plan, chosen: Chosen, target: str, actor: str = "cli") -> Restored:
    started = time.monotonic()
    kind_of(plan.source).restore(repo_of(chosen.repository), chosen.snapshot, target)
    seconds = time.monotonic() - started
    audit.record(
        "backup-restored",
        actor=actor,
        org=plan.org,
        target=plan.name,
        snapshot=chosen.snapshot.id,
        repository=chosen.repository.name,
        to=shown_target(target),
        seconds=round(seconds, 3),
    )
    return Restored(chosen.snapshot.id, seconds)


def new_path(target: str) -> Path:
    """Where a restore into files goes: a path that is missing or an empty folder."""
    path = Path(target).expanduser().absolute()
    if path.exists() and (path.is_file() or any(path.iterdir())):
        raise RestoreRefused(f"{path} exists and is not empty; choose a new place")
    return path


@contextmanager
def removed_on_failure(remove: Callable[[], None], what: str, how: str) -> Iterator[None]:
    """A restore that fails half-way must not leave a target that looks restored: onwatch
    made `what` for this restore, so it removes it again, or says exactly what is left and
    `how` to remove it. Ctrl+C stays Ctrl+C, after the clean-up."""
    try:
        yield
    except BaseException as e:
        failed: type[targets.RestoreFailed] = targets.RestoreFailed
        try:
            remove()
            left = f"nothing is left behind: onwatch removed {what}"
        except (psycopg.Error, mariadb_tools.MariaDBError, OSError) as gone:
            left = f"{what} is still there (removing it failed: {str(gone).strip()}); {how}"
            failed = LeftBehind
        if not isinstance(e, Exception):
            raise
        raise failed(f"{str(e).strip() or type(e).__name__}; {left}") from e
