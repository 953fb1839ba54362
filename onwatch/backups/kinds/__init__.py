"""Kinds of backup source, one module each: what a PostgreSQL database, a MariaDB database, a
SQLite file or a folder needs checked, dumped, measured, restored and explained. Runs,
drills, restores, the recovery kit, checks and forms ask the source's kind; none of them
branches on it. A new kind is one new module here that implements `Kind` (and its choice in
models.SourceKind, which the database stores).

A kind module is its own implementation: it ends with `_: Kind = <itself>` under
TYPE_CHECKING, so mypy proves it has every member with the right types.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from onwatch.backups import restic
    from onwatch.backups.drills import Phases
    from onwatch.backups.models import Plan, Repository, Source
    from onwatch.backups.restore_requests import Target
    from onwatch.backups.runs import Outcomes

Log = Callable[[str], None]
# What the form asks of a database on a server, whichever server it is.
SERVER_FIELDS: tuple[str, ...] = (
    "host",
    "port",
    "database",
    "username",
    "password",
    "provider",
    "scratch_url",
    "smoke_queries",
)


class UnknownKind(Exception):
    """A source of a kind no module here implements; the message is for people."""


@runtime_checkable
class Kind(Protocol):
    KIND: str  # its value in models.SourceKind
    HELP: str  # one line on the page where people pick a kind
    FIELDS: tuple[str, ...]  # the Source fields its form asks for
    FIELD_HELP: dict[str, str]  # help texts of its own for some of those fields
    # URL schemes of the database servers it lives on, the one onwatch writes first; none
    # for kinds whose data is a path on this machine (drills then restore onto the
    # scratch disk, and its copies are offsite by provider alone).
    SCHEMES: tuple[str, ...]
    DEFAULT_PORT: int  # of its servers; 0 when it has none
    SUFFIX: str  # the file name ending of its snapshot when it is one stream

    def check(self, source: Source) -> list[str]:
        """What stands in the way of a backup, one line for people each; none when ready."""
        ...

    def backup(self, plan: Plan, copies: list[Repository], tags: list[str], log: Log) -> Outcomes:
        """Dump the source into every copy, and measure what the dump holds."""
        ...

    def snapshot_path(self, plan: Plan) -> str:
        """Where the data sits inside a snapshot of the plan."""
        ...

    def drill(
        self,
        plan: Plan,
        repo: restic.Repo,
        snap: restic.Snapshot,
        contents: dict[str, Any],
        log: Log,
    ) -> Phases:
        """Restore into a scratch target made for it, compare with `contents`, remove it."""
        ...

    def restore(self, repo: restic.Repo, snap: restic.Snapshot, target: str) -> None:
        """Into a new target people chose (a URL or a path), never over existing data."""
        ...

    def target_taken(self, source: Source, target: Target) -> bool:
        """Whether a restore target exists already."""
        ...

    def kit_steps(self, plan: Plan, command: str, snapshot: str) -> list[str]:
        """The recovery kit's restore steps, by hand with restic and the kind's own tools."""
        ...


@cache
def registry() -> dict[str, Kind]:
    """Every module in this package, by its kind. Imported on first use, not with the
    package: the kinds build on runs, drills and restores, which ask for them."""
    found: dict[str, Kind] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not isinstance(module, Kind):
            raise TypeError(f"{module.__name__} does not implement every member of Kind")
        found[module.KIND] = module
    return found


def named(kind: str) -> Kind:
    found = registry().get(kind)
    if found is None:
        raise UnknownKind(f"onwatch cannot back up sources of kind {kind!r}")
    return found


def kind_of(source: Source) -> Kind:
    return named(source.kind)


def on_server(source: Source) -> bool:
    """The source is a database on a server (not a path on this machine)."""
    return bool(kind_of(source).SCHEMES)
