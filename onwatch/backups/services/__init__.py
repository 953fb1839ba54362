"""What the rest of onwatch calls: repositories, sources and plans, and where copies sit.

This package is the only code that creates, changes or removes them (and asks for
restores): each function takes typed input and the actor, applies the rules once and
writes the audit entry once, whatever the surface (a form, the CLI, a test) that parsed
the input. The writes live in the modules beside this one and are imported here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from onwatch.backups import restic
from onwatch.backups.conf import restic_cache
from onwatch.backups.kinds import on_server
from onwatch.backups.models import Drill, Outcome, Plan, Repository, RunCopy, Source
from onwatch.core.models import Job, Organization

LOOPBACK = {"", "localhost", "::1", "[::1]"}


def this_machine(host: str) -> bool:
    return host.lower() in LOOPBACK or host.startswith("127.")


WEEKLY_DRILL = "0 4 * * 0"


class Refused(ValueError):
    """A change the rules do not allow; the message is for people, whatever the surface."""


class InvalidRepository(Refused):
    """The repository's address or credentials cannot be used; the message is for people."""


def name_problem(model: Any, org: Organization, name: str, current: Any = None) -> str | None:
    """Names are unique per organization and kind of object: people pick by name (the
    plan list, `onwatch restore PLAN`). None when `name` is free."""
    taken = model.objects.filter(org=org, name=name)
    if current is not None:
        taken = taken.exclude(pk=current.pk)
    if not taken.exists():
        return None
    what = model._meta.verbose_name
    return f"Another {what} is called {name}; pick another name."


def repo_of(repository: Repository) -> restic.Repo:
    return restic.Repo(
        repository.url,
        repository.password,
        restic_cache(),
        env=json.loads(repository.env) if repository.env else {},
        ssh_key=repository.ssh_key,
        known_hosts=repository.known_hosts,
    )


def host_of_url(url: str) -> str:
    """The machine a restic repository URL points at; "" for this machine."""
    scheme, _, rest = url.partition(":")
    if scheme == "sftp":
        # sftp:user@host:/path or sftp://user@host:port//path, as restic reads them
        try:
            target = restic.sftp_target(url)
        except ValueError:
            target = None
        host = target.host if target else ""
    elif scheme in ("rest", "s3") and "://" in rest:
        from urllib.parse import urlsplit

        host = urlsplit(rest).hostname or ""
    elif scheme in ("s3", "swift", "b2", "azure", "gs", "rclone"):
        host = rest.split("/", 1)[0]
    else:
        host = ""  # a local path
    return "" if this_machine(host) else host.lower()


def source_host(source: Source) -> str:
    if on_server(source):
        return "" if this_machine(source.host) else source.host.lower()
    return ""


def is_offsite(repository: Repository, source: Source) -> bool:
    """Offsite means another provider and another machine than the source's."""
    same_provider = bool(source.provider) and repository.provider.lower() == source.provider.lower()
    return not same_provider and repository.host != source_host(source)


def offsite_copies(plan: Plan) -> list[Repository]:
    return [r for r in plan.copies.all() if is_offsite(r, plan.source)]


def not_offsite(plan: Plan) -> bool:
    return not offsite_copies(plan)


def drill_repository(plan: Plan) -> Repository | None:
    """Drills restore from the copy the plan names, else the first offsite one, else the
    first copy."""
    if plan.drill_from_id and plan.copies.filter(pk=plan.drill_from_id).exists():
        return plan.drill_from
    offsite = offsite_copies(plan)
    return offsite[0] if offsite else plan.copies.first()


def good_copy_rows(plan: Plan) -> QuerySet[RunCopy]:
    """The plan's good copies of runs that ended. A run that is still going, or whose
    worker died, has not recorded what is in its snapshots (drills compare against that),
    so its copies are neither restored, drilled nor counted for the RPO."""
    found = RunCopy.objects.filter(run__plan=plan, good=True)
    return found.exclude(run__state__in=[Outcome.RUNNING, Outcome.INTERRUPTED])


def newest_good_copy(plan: Plan, repository: Repository) -> RunCopy | None:
    return (
        good_copy_rows(plan)
        .filter(repository=repository)
        .select_related("run")
        .order_by("-finished_at", "-id")
        .first()
    )


def verified_copies(plan: Plan, repository: Repository) -> list[RunCopy]:
    """The plan's snapshots in `repository` that onwatch verified (the dump ended well and
    its rows were counted) and that no drill has since proved broken, newest first: the
    only ones restores (UI, CLI, recovery kit) pick. A snapshot of a cut-off dump that an
    append-only repository would not let onwatch remove is not here."""
    copies = good_copies(plan, repository)
    broken = failed_drills(plan, repository, copies)
    return [c for c in copies if c.run_id not in broken]


def good_copies(plan: Plan, repository: Repository) -> list[RunCopy]:
    found = good_copy_rows(plan).filter(repository=repository)
    found = found.exclude(snapshot_id="").select_related("run")
    return list(found.order_by("-finished_at", "-id"))


def failed_drills(plan: Plan, repository: Repository, copies: list[RunCopy]) -> dict[int, Drill]:
    """Per backup run, the newest finished drill of its snapshot in `repository` when that
    drill failed to bring the data back whole. A drill that restored and verified the data
    but was over its RTO target proved the snapshot good, not broken; a cancelled one
    proved nothing, so only passed and failed drills count, and a later passing drill
    takes the snapshot back."""
    drills = Drill.objects.filter(
        plan=plan,
        repository=repository,
        run_id__in=[c.run_id for c in copies],
        finished_at__isnull=False,
        state__in=[Outcome.SUCCEEDED, Outcome.FAILED],
    ).order_by("finished_at", "id")
    newest = {d.run_id: d for d in drills if d.run_id is not None}
    return {run: d for run, d in newest.items() if d.state == Outcome.FAILED and not d.verified}


def left_out_copies(plan: Plan, repository: Repository) -> list[tuple[RunCopy, Drill]]:
    """The verified snapshots that restores leave out because their newest drill failed,
    newest first, with that drill: the restore page and the recovery kit say why."""
    copies = good_copies(plan, repository)
    broken = failed_drills(plan, repository, copies)
    return [(c, broken[c.run_id]) for c in copies if c.run_id in broken]


def why_left_out(copy: RunCopy, drill: Drill) -> str:
    """One line for people: which backup, and which drill showed it cannot be restored."""
    when = f"{drill.finished_at:%Y-%m-%d %H:%M}" if drill.finished_at else "?"
    error = drill.error.splitlines()[0][:200] if drill.error else "it failed"
    return (
        f"backup #{copy.run_id} (snapshot {copy.snapshot_id[:8]}): the restore "
        f"drill of {when} UTC could not bring it back whole ({error})"
    )


def private_path_problem(path: str) -> str | None:
    """onwatch's own database, secret key and key file are not a backup source: a source
    there would let those who manage backups read sessions and secrets through its drills.
    None when `path` is fine."""
    target = Path(path).expanduser().resolve()
    data = Path(settings.DATA_DIR).expanduser().resolve()
    key = Path(settings.KEY_FILE).expanduser().resolve()
    if target == data or data in target.parents or target in data.parents:
        return f"{path} is or holds onwatch's own data folder ({data}); choose another path"
    if target == key or target in key.parents:
        return f"{path} is or holds onwatch's key file ({key}); choose another path"
    return None


def last_reclaim(repository: Repository) -> Job | None:
    """The newest finished weekly prune of this repository (its evidence on the page)."""
    found: Job | None = (
        Job.objects.filter(kind="backups.reclaim", payload__repository=repository.pk)
        .exclude(finished_at=None)
        .order_by("-finished_at")
        .first()
    )
    return found


def cancelled_by(job: Job | None) -> str:
    """Who asked to cancel the job a run or drill belongs to ("" for nobody), for the
    words of one its cancel stopped. Whether the cancel stopped it is the job context's
    to say (ctx.cancelled), not this: asking is not stopping."""
    if job is None:
        return ""
    asked = Job.objects.filter(pk=job.pk).values_list("cancel_requested_by", flat=True)
    return asked.first() or ""


# The writes. Imported last: they use the helpers above.
from onwatch.backups.services.actors import CLI, SYSTEM, Actor  # noqa: E402
from onwatch.backups.services.asked import (  # noqa: E402
    Asked,
    backup_state,
    plan_choices,
    plan_name,
    plan_named,
    plan_problem,
    start_backup,
)
from onwatch.backups.services.plans import (  # noqa: E402
    PlanFields,
    add_plan,
    change_plan,
    create_plan,
    remove_plan,
)
from onwatch.backups.services.repositories import (  # noqa: E402
    RepositoryChange,
    add_repository,
    alert_nobody_prunes,
    change_repository,
    connect_repository,
    forget_host_key,
    mark_append_only,
    remove_repository,
)
from onwatch.backups.services.restore_requests import (  # noqa: E402
    request_restore,
    restore_here,
)
from onwatch.backups.services.sources import (  # noqa: E402
    SourceFields,
    add_source,
    change_source,
    remove_source,
)

__all__ = [
    "CLI",
    "SYSTEM",
    "Actor",
    "Asked",
    "PlanFields",
    "RepositoryChange",
    "SourceFields",
    "add_plan",
    "add_repository",
    "add_source",
    "alert_nobody_prunes",
    "backup_state",
    "change_plan",
    "change_repository",
    "change_source",
    "connect_repository",
    "create_plan",
    "forget_host_key",
    "mark_append_only",
    "plan_choices",
    "plan_name",
    "plan_named",
    "plan_problem",
    "remove_plan",
    "remove_repository",
    "remove_source",
    "request_restore",
    "restore_here",
    "start_backup",
]
