"""SQLite files on this machine: copied with SQLite's online backup API while in use,
restored as a new file. Copying, measuring and querying the files is files.py's."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onwatch.backups import drills, files, restic, restores, runs, scratch, targets
from onwatch.backups.contents import checksum_checks
from onwatch.backups.kinds import Log
from onwatch.backups.models import Plan, Repository, Source, SourceKind
from onwatch.backups.restore_requests import Target, path_taken
from onwatch.backups.services import private_path_problem, repo_of

KIND: str = SourceKind.SQLITE
HELP: str = "a SQLite database file on this machine, copied safely while in use"
FIELDS: tuple[str, ...] = ("path", "provider", "smoke_queries")
FIELD_HELP: dict[str, str] = {"path": "The database file's full path, starting with /."}
SCHEMES: tuple[str, ...] = ()
DEFAULT_PORT: int = 0
SUFFIX: str = "sqlite3"
HEADER = b"SQLite format 3\x00"


def check(source: Source) -> list[str]:
    path = Path(source.path)
    if not source.path:
        return ["enter the path of the SQLite file"]
    if not path.exists():
        return [f"{path} does not exist; check the path"]
    if not path.is_file():
        return [f"{path} is not a file; enter the path of the SQLite database file"]
    try:
        with path.open("rb") as f:
            header = f.read(len(HEADER))
    except OSError as e:
        return [f"onwatch cannot read {path} ({e.strerror}); check its permissions"]
    if header != HEADER:
        return [f"{path} is not a SQLite database; check the path"]
    return []


def backup(plan: Plan, copies: list[Repository], tags: list[str], log: Log) -> runs.Outcomes:
    if problem := private_path_problem(plan.source.path):
        raise runs.DumpFailed(problem)
    out = runs.Outcomes()
    with tempfile.TemporaryDirectory(prefix="onwatch-sqlite-") as tmp:
        copy = Path(tmp) / "copy.sqlite3"
        files.sqlite_copy(Path(plan.source.path), copy)
        out.contents = files.sqlite_contents(copy).as_json()
        log(f"copied {plan.source.path} with the online backup API ({copy.stat().st_size} bytes)")
        for c in copies:
            with copy.open("rb") as f:
                name = runs.snapshot_name(plan)
                running = restic.start_backup_stdin(repo_of(c), name, tags, f)
                out.results.update(runs.finish_all({c.pk: running}))
    return out


def snapshot_path(plan: Plan) -> str:
    return f"/{runs.snapshot_name(plan)}"


def drill(
    plan: Plan, repo: restic.Repo, snap: restic.Snapshot, contents: dict[str, Any], log: Log
) -> drills.Phases:
    with tempfile.TemporaryDirectory(prefix="onwatch-drill-", dir=scratch.root()) as tmp:
        target = Path(tmp) / "scratch.sqlite3"
        timings = targets.to_sqlite(repo, snap, target)
        started = time.monotonic()
        integrity = files.sqlite_integrity(target)
        checks = [drills.check("PRAGMA integrity_check", integrity == "ok", integrity[:200])]
        found = files.sqlite_contents(target)
        checks += drills.count_checks(contents.get("tables", {}), found.rows)
        checks += checksum_checks(contents.get("checksums", {}), found.checksums)
        ask = partial(files.sqlite_query, target)
        checks += drills.smoke_checks(plan.source.smoke_queries, ask)
        return timings, time.monotonic() - started, checks


def restore(repo: restic.Repo, snap: restic.Snapshot, target: str) -> None:
    path = restores.new_path(target)
    what, how = f"the half-written file {path}", f"delete it with rm {path}"
    with restores.removed_on_failure(lambda: remove(path), what, how):
        targets.to_sqlite(repo, snap, path)


def remove(path: Path) -> None:
    """The file and what SQLite keeps beside it while writing (a full disk leaves its
    rollback journal)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def target_taken(source: Source, target: Target) -> bool:
    return path_taken(target)


def kit_steps(plan: Plan, command: str, snapshot: str) -> list[str]:
    return [
        "The newest verified backup as the file `restored.sqlite3` in the current directory:",
        "",
        "```sh",
        f"{command} dump {snapshot} /{runs.snapshot_name(plan)} > restored.sqlite3",
        "```",
    ]


if TYPE_CHECKING:
    from onwatch.backups import kinds
    from onwatch.backups.kinds import sqlite

    _: kinds.Kind = sqlite
