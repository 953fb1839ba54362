"""Restore drills: the newest good snapshot of the offsite copy is restored into a scratch
target, compared with what the backup run recorded, and thrown away. The time it took is
the measured RTO."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from onwatch.backups import files, restic, scratch, targets
from onwatch.backups.kinds import kind_of
from onwatch.backups.models import Drill, Outcome, Plan, RunCopy
from onwatch.backups.services import cancelled_by, drill_repository, newest_good_copy, repo_of
from onwatch.core.jobs import JobContext
from onwatch.core.lazy import lazy_module
from onwatch.core.mariadb import MariaDBError

if TYPE_CHECKING:
    import psycopg
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")

Log = Callable[[str], None]
Check = dict[str, Any]
Query = Callable[[str], list[list[Any]]]


class DrillFailed(Exception):
    """The drill could not start or finish; the message is for people."""


def check(name: str, ok: bool, detail: str) -> Check:
    return {"check": name, "ok": ok, "detail": detail}


def count_checks(expected: dict[str, int], actual: dict[str, int]) -> list[Check]:
    found = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if got is None:
            detail = f"missing from the restored copy ({want} rows at backup)"
        elif want is None:
            detail = f"{got} rows, but the backup recorded no such table"
        else:
            detail = f"{got} rows, {want} at backup"
        found.append(check(f"rows in {table}", want == got, detail))
    return found


READ_STATEMENT = re.compile(r"\s*(select|with|values|table)\b", re.IGNORECASE)


def read_only_problem(sql: str) -> str | None:
    """Smoke queries read: one SELECT (or WITH/VALUES/TABLE) statement, run in a read-only
    transaction where the database has them. Anything else is refused unrun."""
    body = sql.strip().rstrip(";")
    if not READ_STATEMENT.match(body) or ";" in body:
        return "not run: a smoke query is one SELECT statement"
    return None


def smoke_checks(queries: list[dict[str, Any]], query: Query) -> list[Check]:
    found = []
    for q in queries:
        if problem := read_only_problem(q["sql"]):
            found.append(check(f"smoke query {q['sql']!r}", False, problem))
            continue
        try:
            # Through JSON, so dates and decimals compare as the user wrote them.
            got = json.loads(json.dumps(query(q["sql"]), default=str))
        except (psycopg.Error, sqlite3.Error, MariaDBError) as e:
            found.append(check(f"smoke query {q['sql']!r}", False, f"failed: {e}"))
            continue
        ok = got == q.get("expect")
        found.append(check(f"smoke query {q['sql']!r}", ok, f"answered {got}"))
    return found


def hash_checks(expected: dict[str, Any], root: Path) -> list[Check]:
    found = [
        check(
            "file count",
            len(files.walk(root)) == expected.get("files"),
            f"{len(files.walk(root))} files, {expected.get('files')} at backup",
        )
    ]
    for rel, digest in sorted(expected.get("sample", {}).items()):
        path = root / rel
        got = files.sha256(path) if path.is_file() else "missing"
        found.append(check(f"sha256 of {rel}", got == digest, got[:16]))
    return found


# What a kind's drill gives back: restore timings, seconds spent checking, the checks.
Phases = tuple[targets.Timings, float, list[Check]]


# --- the drill -------------------------------------------------------------------------------


def pick(drill: Drill, log: Log) -> tuple[restic.Repo, restic.Snapshot, dict[str, Any]]:
    plan = drill.plan
    repository = drill_repository(plan)
    if repository is None:
        raise DrillFailed("the plan has no copies to restore from; add a repository to it")
    copy = newest_good_copy(plan, repository)
    if copy is None:
        raise DrillFailed(f"{repository.name} holds no good backup of this plan yet; run one")
    drill.repository, drill.run, drill.snapshot_id = repository, copy.run, copy.snapshot_id
    repo = repo_of(repository)
    contents = copy.run.contents
    path = contents.get("snapshot_path")
    if path:
        # The run recorded the snapshot's id and what is in it: no listing (a restic call
        # and a key derivation) before the restore. A snapshot removed behind onwatch's back
        # makes the restore fail with restic.SnapshotMissing, said in plain words.
        snap = restic.Snapshot(copy.snapshot_id, copy.snapshot_id[:8], "", [path])
    else:
        # Runs from before snapshot paths were recorded: look the snapshot up.
        # restic before 0.17 reports the short id of a new snapshot, later ones the full id.
        found = [s for s in restic.snapshots(repo, [plan.tag]) if s.id.startswith(copy.snapshot_id)]
        if not found:
            raise DrillFailed(gone(copy))
        snap = found[0]
    drill.snapshot_id = snap.id
    log(f"restoring snapshot {copy.snapshot_id[:8]} (run #{copy.run_id}) from {repository.name}")
    return repo, snap, contents


def gone(copy: RunCopy) -> str:
    return (
        f"snapshot {copy.snapshot_id[:8]} of run #{copy.run_id} is gone from "
        f"{copy.repository.name}; someone removed it, or retention did — check the repository"
    )


def run_drill(plan: Plan, log: Log, ctx: JobContext | None = None) -> Drill:
    drill = Drill.objects.create(plan=plan, job=ctx.job if ctx else None)
    started = time.monotonic()
    try:
        repo, snap, contents = pick(drill, log)
        looked_up = time.monotonic() - started
        with scratch.full_disk_explained(plan):
            kind = kind_of(plan.source)
            timings, verify, checks = kind.drill(plan, repo, snap, contents, log)
        drill.fetch_seconds = looked_up + timings.fetch
        drill.restore_seconds, drill.verify_seconds = timings.restore, verify
        drill.rto_seconds = drill.fetch_seconds + timings.restore + verify
        drill.checks = checks
        drill.verified = all(c["ok"] for c in checks) and bool(checks)
        drill.error = verdict(drill)
    except (
        DrillFailed,
        scratch.ScratchFull,
        targets.RestoreFailed,
        restic.ResticError,
        OSError,
        psycopg.Error,
        MariaDBError,
        sqlite3.Error,
    ) as e:
        drill.error = str(e).strip() or type(e).__name__
    drill.state = Outcome.FAILED if drill.error else Outcome.SUCCEEDED
    # Only one the cancel stopped before it measured anything: a finished drill's verdict
    # (too slow, a bad table) stands, however late a cancel came, and so does a failure
    # the cancel did not cause (the snapshot it could not bring back is no longer offered).
    if drill.error and drill.rto_seconds is None and ctx and ctx.cancelled.is_set():
        who = cancelled_by(ctx.job) or "someone"
        drill.state, drill.error = Outcome.CANCELLED, f"cancelled by {who}; {drill.error}"
    drill.finished_at = timezone.now()
    drill.save()
    return drill


def verdict(drill: Drill) -> str:
    """Why a finished drill failed, or "" when it passed."""
    bad = [f"{c['check']}: {c['detail']}" for c in drill.checks if not c["ok"]]
    if bad:
        return "the restored copy does not match the backup: " + "; ".join(bad[:5])
    if not drill.checks:
        return "nothing was checked in the restored copy"
    target = drill.plan.rto_minutes * 60
    if drill.rto_seconds is not None and drill.rto_seconds > target:
        return (
            f"restored and verified, but it took {drill.rto_seconds:.0f} s, over the RTO "
            f"target of {drill.plan.rto_minutes} min; make restores faster or raise the target"
        )
    return ""
