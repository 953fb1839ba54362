"""Real restores: a chosen snapshot into a chosen target, never over existing data."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from onwatch.backups import mariadb, pg, restic, targets
from onwatch.backups.models import Plan, Repository, SourceKind
from onwatch.backups.services import drill_repository, repo_of
from onwatch.core import audit


class RestoreRefused(Exception):
    """The restore would be unsafe or cannot start; the message is for people."""


@dataclass(frozen=True)
class Chosen:
    repository: Repository
    snapshot: restic.Snapshot


@dataclass(frozen=True)
class Restored:
    snapshot_id: str
    seconds: float


def choose(plan: Plan, snapshot: str = "", repository: Repository | None = None) -> Chosen:
    """The snapshot to restore: the one named (by id or prefix), else the newest."""
    repository = repository or drill_repository(plan)
    if repository is None:
        raise RestoreRefused(f"{plan.name} has no copies; add a repository to it")
    snaps = restic.snapshots(repo_of(repository), [plan.tag])
    if snapshot:
        snaps = [s for s in snaps if s.id.startswith(snapshot)]
    if not snaps:
        which = f"snapshot {snapshot!r}" if snapshot else "no snapshot"
        raise RestoreRefused(f"{repository.name} holds {which} of {plan.name}")
    return Chosen(repository, snaps[-1])


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
    server = pg.Server(
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
    targets.to_postgresql(repo, snap, server, name)


def into_new_mariadb(repo: restic.Repo, snap: restic.Snapshot, url: str) -> None:
    """MariaDB targets too are a URL naming a database onwatch creates."""
    server = mariadb.url_server(url)
    if urlsplit(url).scheme not in mariadb.SCHEMES or not server.database:
        raise RestoreRefused(
            f"{shown_target(url)} is not a MariaDB URL with a database name; use "
            "mariadb://user:password@host:3306/new_database"
        )
    try:
        mariadb.create_database(server, server.database)
    except mariadb.DatabaseExists:
        raise RestoreRefused(
            f"the database {server.database} exists already; restore into a new name"
        ) from None
    except mariadb.MariaDBError as e:
        raise RestoreRefused(str(e)) from None
    targets.to_mariadb(repo, snap, server, server.database)
