"""`onwatch restore`: a verified snapshot into a new target."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    from onwatch.backups.models import Plan
    from onwatch.backups.restores import Chosen, Restored


def register(add: AddCommand) -> None:
    restore = add("restore", cmd_restore, "Restore a backup snapshot into a new target.")
    restore.add_argument("plan", help="the backup plan's name")
    restore.add_argument(
        "--to",
        required=True,
        help="a new PostgreSQL URL (postgresql://user@host/new_db), SQLite file or directory",
    )
    restore.add_argument(
        "--snapshot", default="", help="a verified snapshot's id or prefix (default: the newest)"
    )
    restore.add_argument("--repository", help="the copy to restore from (default: offsite one)")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def cmd_restore(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.backups import restic
    from onwatch.backups.models import Plan
    from onwatch.backups.restores import RestoreRefused, choose, shown_target
    from onwatch.backups.targets import RestoreFailed

    plan = Plan.objects.select_related("source", "org").filter(name=args.plan).first()
    if plan is None:
        fail(f"there is no backup plan {args.plan!r}; see the names under Backups")
        return 2
    repository = None
    if args.repository:
        repository = plan.copies.filter(name=args.repository).first()
        if repository is None:
            fail(f"{plan.name} has no copy named {args.repository!r}")
    try:
        chosen = choose(plan, args.snapshot, repository)
        print(
            f"onwatch: snapshot {chosen.snapshot.short_id} of {chosen.snapshot.time[:19]} "
            f"(verified backup #{chosen.run_id}) from {chosen.repository.name} into "
            f"{shown_target(args.to)}",
            flush=True,
        )
        if not args.yes and not confirmed():
            fail("nothing was restored (answer yes, or pass --yes)")
        print("onwatch: restoring…", flush=True)
        done = restore_in_foreground(plan, chosen, args.to)
    except (RestoreRefused, RestoreFailed, restic.ResticError) as e:
        fail(f"{e}")
    print(f"onwatch: restored {done.snapshot_id[:8]} in {done.seconds:.1f} s")
    return 0


def restore_in_foreground(plan: Plan, chosen: Chosen, to: str) -> Restored:
    """The restore as the UI asks for one (the same row on the plan's page, the same audit
    entry, by "cli"), run here rather than by a worker: the target URL may carry a
    password, which a job's payload must not."""
    from onwatch.backups import services
    from onwatch.backups.models import Outcome
    from onwatch.backups.restore_requests import finish
    from onwatch.backups.restores import LeftBehind, restore, shown_target

    row = services.restore_here(
        plan, chosen.repository, chosen.snapshot.id, shown_target(to), services.CLI
    )
    started = time.monotonic()
    try:
        done = restore(plan, chosen, to)
    except BaseException as e:
        # Ctrl+C stops it as a cancel stops a job: cancelled, not failed.
        state = Outcome.FAILED if isinstance(e, Exception) else Outcome.CANCELLED
        error = str(e).strip() or type(e).__name__
        finish(row, state, time.monotonic() - started, error, isinstance(e, LeftBehind))
        raise
    finish(row, Outcome.SUCCEEDED, done.seconds, "")
    return done


def confirmed() -> bool:
    try:
        return input("Restore? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
