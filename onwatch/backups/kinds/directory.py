"""Folders on this machine (uploads, documents, configuration): backed up file by file by
restic, restored as a new folder. Hashing and listing the files is files.py's."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onwatch.backups import drills, files, restic, restores, runs, scratch, targets
from onwatch.backups.kinds import Log
from onwatch.backups.models import Plan, Repository, Source, SourceKind
from onwatch.backups.restore_requests import Target, path_taken
from onwatch.backups.services import private_path_problem, repo_of

KIND: str = SourceKind.DIRECTORY
HELP: str = "a directory on this machine: uploads, documents, configuration"
FIELDS: tuple[str, ...] = ("path", "provider")
FIELD_HELP: dict[str, str] = {"path": "The directory's full path, starting with /."}
SCHEMES: tuple[str, ...] = ()
DEFAULT_PORT: int = 0
SUFFIX: str = "data"  # unused: its snapshots hold the folder itself


def check(source: Source) -> list[str]:
    path = Path(source.path)
    if not source.path:
        return ["enter the path of the directory"]
    if not path.exists():
        return [f"{path} does not exist; check the path"]
    if not path.is_dir():
        return [f"{path} is not a directory; enter a directory's path"]
    if not os.access(path, os.R_OK | os.X_OK):
        return [f"onwatch cannot read {path}; check its permissions"]
    return []


def backup(plan: Plan, copies: list[Repository], tags: list[str], log: Log) -> runs.Outcomes:
    if problem := private_path_problem(plan.source.path):
        raise runs.DumpFailed(problem)
    root = Path(plan.source.path)
    out = runs.Outcomes(contents=files.manifest(root))
    log(f"{out.contents['files']} files, {out.contents['bytes']} bytes in {root}")
    for c in copies:
        try:
            out.results[c.pk] = restic.backup_paths(repo_of(c), [str(root)], tags)
        except restic.ResticError as e:  # restic.IncompleteBackup too: it keeps the snapshot
            out.results[c.pk] = e
    return out


def snapshot_path(plan: Plan) -> str:
    return str(Path(plan.source.path))


def drill(
    plan: Plan, repo: restic.Repo, snap: restic.Snapshot, contents: dict[str, Any], log: Log
) -> drills.Phases:
    with tempfile.TemporaryDirectory(prefix="onwatch-drill-", dir=scratch.root()) as tmp:
        target = Path(tmp) / "restored"
        timings = targets.to_directory(repo, snap, target)
        started = time.monotonic()
        checks = drills.hash_checks(contents, target)
        return timings, time.monotonic() - started, checks


def restore(repo: restic.Repo, snap: restic.Snapshot, target: str) -> None:
    targets.to_directory(repo, snap, restores.new_path(target))


def target_taken(source: Source, target: Target) -> bool:
    return path_taken(target)


def kit_steps(plan: Plan, command: str, snapshot: str) -> list[str]:
    return [
        "The newest verified backup into the directory `restored` (the files land under "
        f"`restored{plan.source.path}`):",
        "",
        "```sh",
        f"{command} restore {snapshot} --target restored",
        "```",
    ]


if TYPE_CHECKING:
    from onwatch.backups import kinds
    from onwatch.backups.kinds import directory

    _: kinds.Kind = directory
