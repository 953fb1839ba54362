"""Real restores: a chosen snapshot into a chosen target, never over existing data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from onwatch.backups import restic, targets
from onwatch.backups.models import Plan, Repository, RunCopy, SourceKind
from onwatch.backups.services import (
    drill_repository,
    left_out_copies,
    repo_of,
    verified_copies,
    why_left_out,
)
from onwatch.core import audit, postgres
from onwatch.core import mariadb as mariadb_tools


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
    repo = repo_of(chosen.repository)
    kind = plan.source.kind
    if kind == SourceKind.POSTGRESQL:
        into_new_database(repo, chosen.snapshot, target)
    elif kind == SourceKind.MARIADB:
        into_new_mariadb(repo, chosen.snapshot, target)
    else:
        path = Path(target).expanduser().absolute()
        if path.exists() and (path.is_file() or any(path.iterdir())):
            raise RestoreRefused(f"{path} exists and is not empty; choose a new place")
        if kind == SourceKind.SQLITE:
            what, how = f"the half-written file {path}", f"delete it with rm {path}"
            with removed_on_failure(lambda: remove_sqlite(path), what, how):
                targets.to_sqlite(repo, chosen.snapshot, path)
        else:
            targets.to_directory(repo, chosen.snapshot, path)
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


def remove_sqlite(path: Path) -> None:
    """The file and what SQLite keeps beside it while writing (a full disk leaves its
    rollback journal)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def into_new_database(repo: restic.Repo, snap: restic.Snapshot, url: str) -> None:
    """PostgreSQL targets are a URL whose database must not exist yet: onwatch creates it,
    so a restore can never mix into (or overwrite) a live database."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or not name:
        raise RestoreRefused(
            f"{shown_target(url)} is not a PostgreSQL URL with a database name; use "
            "postgresql://user@host:5432/new_database"
        )
    server = postgres.Server(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        database="postgres",
    )
    try:
        with server.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        raise RestoreRefused(
            f"the database {name} exists already; restore into a new name"
        ) from None
    except psycopg.Error as e:
        # The server is down or unreachable, or the user may not create databases: nothing
        # was made, so nothing is left to remove.
        said = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RestoreRefused(
            f"cannot create the database {name} on the PostgreSQL server at {server.where} "
            f"({said}); check that it runs and that the URL is right, then try again — "
            "nothing was restored or changed"
        ) from None
    what = f"the half-restored database {name} on {server.host}:{server.port}"
    drop = f'drop it with the SQL DROP DATABASE "{name}";'
    with removed_on_failure(lambda: postgres.drop_database(server, name), what, drop):
        targets.to_postgresql(repo, snap, server, name)


def into_new_mariadb(repo: restic.Repo, snap: restic.Snapshot, url: str) -> None:
    """MariaDB targets too are a URL naming a database onwatch creates."""
    server = mariadb_tools.url_server(url)
    if urlsplit(url).scheme not in mariadb_tools.SCHEMES or not server.database:
        raise RestoreRefused(
            f"{shown_target(url)} is not a MariaDB URL with a database name; use "
            "mariadb://user:password@host:3306/new_database"
        )
    try:
        mariadb_tools.create_database(server, server.database)
    except mariadb_tools.DatabaseExists:
        raise RestoreRefused(
            f"the database {server.database} exists already; restore into a new name"
        ) from None
    except mariadb_tools.MariaDBError as e:
        raise RestoreRefused(str(e)) from None
    name = server.database
    what = f"the half-restored database {name} on {server.where}"
    drop = f"drop it with the SQL DROP DATABASE `{name}`;"
    with removed_on_failure(lambda: mariadb_tools.drop_database(server, name), what, drop):
        targets.to_mariadb(repo, snap, server, name)


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
