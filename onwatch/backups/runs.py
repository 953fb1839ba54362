"""Backup runs that cannot lie.

The dump is supervised: its exit status decides, not restic's. restic stores whatever
reached its stdin, so when the dump fails or is cut off the snapshot it left is removed
(`restic forget`) and the copy is recorded as bad; drills only ever use good copies.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from django.utils import timezone

from onwatch.backups import remote, restic, services
from onwatch.backups.kinds import kind_of
from onwatch.backups.models import BackupRun, Outcome, Plan, Repository, RunCopy
from onwatch.backups.services import repo_of
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
CHUNK = 1 << 20
Result = restic.BackupSummary | restic.ResticError


class DumpFailed(Exception):
    """The dump program failed or was cut off; the message is for people."""


@dataclass
class Outcomes:
    contents: dict[str, Any] = field(default_factory=dict)
    results: dict[int, Result] = field(default_factory=dict)
    dump_error: str = ""


def snapshot_name(plan: Plan) -> str:
    """The file name of a dump taken as one stream."""
    return f"onwatch-source-{plan.source_id}.{kind_of(plan.source).SUFFIX}"


def tags_for(plan: Plan, run: BackupRun) -> list[str]:
    return ["onwatch", plan.tag, f"run:{run.pk}"]


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


# --- streaming a dump into every copy -------------------------------------------------------


def stream(
    producer: IO[bytes], copies: list[Repository], name: str, tags: list[str]
) -> dict[int, restic.Running]:
    """Start one `restic backup --stdin` per copy fed from `producer`, to its end."""
    if len(copies) == 1:
        # One copy: restic reads the dump's pipe itself, as a shell pipeline would.
        only = restic.start_backup_stdin(repo_of(copies[0]), name, tags, stdin=producer)
        producer.close()
        return {copies[0].pk: only}
    running = {
        c.pk: restic.start_backup_stdin(repo_of(c), name, tags, stdin=subprocess.PIPE)
        for c in copies
    }
    tee(producer, [r.proc.stdin for r in running.values() if r.proc.stdin is not None])
    return running


def tee(producer: IO[bytes], sinks: list[IO[bytes]]) -> None:
    """Copy the dump to every restic; one that died (unreachable repository) is dropped,
    and when none is left the producer's pipe is closed so the dump stops too."""
    alive = list(sinks)
    try:
        while alive and (chunk := producer.read(CHUNK)):
            for sink in list(alive):
                try:
                    sink.write(chunk)
                except BrokenPipeError:
                    alive.remove(sink)
    finally:
        producer.close()
        for sink in sinks:
            with contextlib.suppress(BrokenPipeError):
                sink.close()


def finish_all(running: dict[int, restic.Running]) -> dict[int, Result]:
    results: dict[int, Result] = {}
    for pk, r in running.items():
        try:
            results[pk] = restic.finish_backup(r)
        except restic.ResticError as e:
            results[pk] = e
    return results


# --- the run -------------------------------------------------------------------------------


def clear_stale_locks(repository: Repository, log: Log) -> int:
    """Locks left by a crashed run block pruning (and exclusive ones block backups);
    restic's unlock removes only stale ones, never a lock of a restic still running.
    The number removed."""
    repo = repo_of(repository)
    held = restic.locks(repo)
    if not held:
        return 0
    restic.unlock(repo)
    left = restic.locks(repo)
    log(
        f"{repository.name}: removed {len(held) - len(left)} stale lock(s); "
        f"{len(left)} held by restic processes still running"
    )
    return len(held) - len(left)


def stale_locks_cleared(repositories: list[Repository], log: Log) -> bool:
    cleared = 0
    for repository in repositories:
        try:
            cleared += clear_stale_locks(repository, log)
        except restic.ResticError as e:
            log(f"{repository.name}: could not look at its locks: {e}")
    return cleared > 0


def with_unlock_retry(repository: Repository, fn: Callable[[], Any], log: Log) -> Any:
    try:
        return fn()
    except restic.RepositoryLocked as e:
        log(f"{repository.name}: {e}; removing stale locks and trying once more")
        restic.unlock(repo_of(repository))
        return fn()


def record_copy(
    run: BackupRun, repository: Repository, result: Result, dump_error: str, log: Log
) -> tuple[RunCopy, str]:
    """The copy, and what is wrong with a bad snapshot that stayed ("" when none did)."""
    copy = RunCopy(run=run, repository=repository)
    problem = ""
    if isinstance(result, restic.BackupSummary):
        copy.snapshot_id = result.snapshot_id
        copy.bytes_added, copy.files = result.bytes_added, result.files
        copy.good = not dump_error
        copy.error = dump_error
    else:
        copy.error = str(result)
        copy.snapshot_id = getattr(result, "snapshot_id", "")
    if copy.snapshot_id and not copy.good:
        problem = remove_snapshot(repository, copy.snapshot_id, log)
        copy.removed = not problem
        copy.error = "; ".join(e for e in (copy.error, problem) if e)
    copy.save()
    return copy, problem


def remove_snapshot(repository: Repository, snapshot_id: str, log: Log) -> str:
    """A snapshot of a failed dump must not look like a backup: forget it. When the
    repository refuses (an append-only one does), what stays and why, for the alert: it is
    tagged like a good one, and restic's `latest` picks it. "" once it is gone."""
    if repository.append_only:
        # Its server refuses deletes by design: say what stays instead of trying for ~45 s.
        problem = (
            f"the incomplete snapshot {snapshot_id[:8]} could not be removed from this "
            "append-only repository and stays there, tagged like a good backup; onwatch never "
            "restores it, and the recovery kit lists the verified ones to use instead of "
            "restic's `latest`"
        )
        log(f"{repository.name}: {problem}")
        return problem
    try:
        with_unlock_retry(
            repository, lambda: restic.forget(repo_of(repository), [snapshot_id]), log
        )
    except restic.ResticError as e:
        problem = (
            f"the incomplete snapshot {snapshot_id[:8]} could not be removed and stays in the "
            "repository, tagged like a good backup; onwatch never restores it, and the "
            f"recovery kit lists the verified ones to use instead of restic's `latest` ({e})"
        )
        log(f"{repository.name}: {problem}")
        return problem
    log(f"{repository.name}: removed the snapshot {snapshot_id[:8]} of the failed dump")
    return ""


def apply_retention(plan: Plan, repository: Repository, log: Log) -> str:
    keep = restic.Retention(plan.keep_daily, plan.keep_weekly, plan.keep_monthly)
    try:
        clear_stale_locks(repository, log)
        removed = with_unlock_retry(
            repository, lambda: restic.forget_policy(repo_of(repository), [plan.tag], keep), log
        )
    except restic.DeletesRefused:
        services.mark_append_only(repository, "the server refused to forget old snapshots")
        log_left_to_server(repository, log)
        return ""
    except restic.ResticError as e:
        return f"{repository.name}: retention failed: {e}"
    log(
        f"{repository.name}: retention removed {len(removed)} old snapshot(s); the weekly "
        "space reclaim deletes the data only they held"
    )
    return ""


def prune(plan: Plan, log: Log) -> list[str]:
    """Retention for every copy (`forget` by the plan's keep-rules), as its own job after
    a good run: the run is recorded the moment its snapshots are, and a retention that
    fails is a failure of its own, alerted on, that leaves the new backups standing."""
    problems = []
    for repository in plan.copies.all():
        if not repository.ready or left_to_its_server(repository, log):
            continue
        if problem := apply_retention(plan, repository, log):
            problems.append(problem)
    return problems


def left_to_its_server(repository: Repository, log: Log) -> bool:
    """An append-only copy is neither forgotten nor pruned by onwatch: its server refuses
    and whoever runs it removes old backups. Declared on the repository, or found by asking
    a REST server before restic does."""
    if not repository.append_only and restic.deletes_refused(repo_of(repository)):
        services.mark_append_only(repository, "the server refused a test deletion")
    if repository.append_only:
        log_left_to_server(repository, log)
    return repository.append_only


def log_left_to_server(repository: Repository, log: Log) -> None:
    log(
        f"{repository.name}: append-only; onwatch keeps every backup there and "
        f"{repository.pruner} removes old ones"
    )


class ReclaimFailed(Exception):
    """The weekly prune of one repository did not run; the message is for people."""


def reclaim(
    repository: Repository, log: Log, lock_wait: float = 20 * 60, poll: float = 30
) -> restic.PruneSummary:
    """Free the space of forgotten snapshots (`restic prune`). Prune needs the repository
    to itself: while a backup or drill holds it, wait for it (up to `lock_wait` seconds)
    rather than fail. Raises ReclaimFailed."""
    deadline = time.monotonic() + lock_wait
    repo = repo_of(repository)
    while True:
        try:
            summary = restic.prune(repo)
        except restic.RepositoryLocked as e:
            # Locks of a crashed restic go at once; a live backup's lock is waited out.
            if clear_stale_locks(repository, log):
                continue
            if time.monotonic() + poll > deadline:
                raise ReclaimFailed(f"{repository.name}: {e}") from None
            log(f"{repository.name}: in use by another restic; trying again in {poll:.0f} s")
            time.sleep(poll)
            continue
        except restic.ResticError as e:
            raise ReclaimFailed(f"{repository.name}: {e}") from None
        log(f"{repository.name}: freed {summary.freed}; {summary.remaining} in use")
        return summary


def reachable_copies(plan: Plan, run: BackupRun, log: Log) -> tuple[list[Repository], list[str]]:
    ready, errors = [], []
    for repository in plan.copies.all():
        try:
            remote.require_ready(repository)
            ready.append(repository)
        except restic.ResticError as e:
            RunCopy.objects.create(run=run, repository=repository, error=str(e))
            errors.append(f"{repository.name}: {e}")
            log(f"{repository.name}: {e}")
    return ready, errors


def run_backup(plan: Plan, log: Log, ctx: JobContext | None = None) -> BackupRun:
    """Back `plan` up to every copy; the run ends succeeded only if every copy is good."""
    run = BackupRun.objects.create(plan=plan, job=ctx.job if ctx else None)
    started = time.monotonic()
    errors: list[str] = []
    try:
        copies, errors = reachable_copies(plan, run, log)
        if copies:
            errors += backup_into(plan, run, copies, log, may_retry=True)
        if not plan.copies.exists():
            errors.append("the plan has no copies; add a repository to it")
    except (DumpFailed, OSError, psycopg.Error, restic.ResticError, MariaDBError) as e:
        errors.append(str(e).strip() or type(e).__name__)
    run.seconds = time.monotonic() - started
    run.finished_at = timezone.now()
    run.state = Outcome.FAILED if errors else Outcome.SUCCEEDED
    run.error = "; ".join(errors)
    # Cancelled only when the cancel stopped its processes: a failure of its own while a
    # cancel was on its way stays a failure, and alerts.
    if errors and ctx and ctx.cancelled.is_set():
        who = services.cancelled_by(ctx.job) or "someone"
        run.state, run.error = Outcome.CANCELLED, f"cancelled by {who}; {run.error}"
    run.save()
    return run


def backup_into(
    plan: Plan, run: BackupRun, copies: list[Repository], log: Log, may_retry: bool = False
) -> list[str]:
    kind = kind_of(plan.source)
    out = kind.backup(plan, copies, tags_for(plan, run), log)
    # Where the data sits inside the snapshot: drills restore it without listing snapshots.
    out.contents["snapshot_path"] = kind.snapshot_path(plan)
    locked = [c for c in copies if isinstance(out.results.get(c.pk), restic.RepositoryLocked)]
    if may_retry and locked and stale_locks_cleared(locked, log):
        # No lock check before every run (each restic call costs a key derivation, some
        # 0.5 s): a lock left by a crashed restic is cleared when it gets in the way, and
        # the whole attempt is made again, so every copy holds the same dump.
        for repository in copies:
            result = out.results.get(repository.pk)
            if isinstance(result, restic.BackupSummary):
                remove_snapshot(repository, result.snapshot_id, log)
        return backup_into(plan, run, copies, log)
    run.contents = out.contents
    errors = [out.dump_error] if out.dump_error else []
    for repository in copies:
        result = out.results[repository.pk]
        copy, stays = record_copy(run, repository, result, out.dump_error, log)
        if stays:
            errors.append(f"{repository.name}: {stays}")
        if not isinstance(result, restic.BackupSummary):
            errors.append(f"{repository.name}: {result}")
            continue
        run.bytes_processed = max(run.bytes_processed, result.bytes_processed)
        log(
            f"{repository.name}: snapshot {copy.snapshot_id[:8]}, "
            f"{result.bytes_processed} bytes read, {result.bytes_added} added"
        )
    return errors
