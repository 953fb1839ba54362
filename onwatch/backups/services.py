"""What the rest of onwatch calls: repositories, sources and plans, and where copies sit."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from onwatch.backups import restic
from onwatch.backups.conf import restic_cache
from onwatch.backups.models import Drill, Outcome, Plan, Repository, RunCopy, Source, SourceKind
from onwatch.core import audit, ssh
from onwatch.core.models import Job, Organization, Schedule

LOOPBACK = {"", "localhost", "::1", "[::1]"}


def this_machine(host: str) -> bool:
    return host.lower() in LOOPBACK or host.startswith("127.")


WEEKLY_DRILL = "0 4 * * 0"


class InvalidRepository(ValueError):
    """The repository's address or credentials cannot be used; the message is for people."""


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
    if source.kind in (SourceKind.POSTGRESQL, SourceKind.MARIADB):
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


def newest_good_copy(plan: Plan, repository: Repository) -> RunCopy | None:
    return (
        RunCopy.objects.filter(run__plan=plan, repository=repository, good=True)
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
    found = RunCopy.objects.filter(run__plan=plan, repository=repository, good=True)
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


def add_repository(
    org: Organization,
    name: str,
    url: str,
    provider: str,
    location: str = "",
    password: str | None = None,
    initialise: bool = True,
    env: dict[str, str] | None = None,
    append_only: bool = False,
    pruned_by: str = "",
) -> Repository:
    """A new repository with a password onwatch generates (unless one is given for an
    existing repository), initialised by restic (or, already there, opened with that
    password). An SFTP one gets a key pair of its own instead and waits, not ready, until
    its public key is on the server and remote.connect_repository() has reached it.
    A REST server that refuses deletions is found append-only here, before any backup.
    Raises InvalidRepository for a URL or env that cannot be used, restic.ResticError when
    restic cannot initialise it."""
    url = url.strip()
    problem = restic.env_problem(env or {}) or restic.plain_http_problem(url)
    if problem:
        raise InvalidRepository(problem)
    try:
        sftp = restic.sftp_target(url)
    except ValueError as e:
        raise InvalidRepository(str(e)) from None
    repository = Repository(
        org=org,
        name=name,
        url=url,
        shown_url=restic.redact(url),
        host=host_of_url(url),
        password=password or secrets.token_urlsafe(32),
        provider=provider,
        location=location,
        env=json.dumps(env) if env else "",
        append_only=append_only,
        pruned_by=pruned_by.strip(),
    )
    if sftp is not None:
        keys = ssh.new_key_pair(f"onwatch repository {name}")
        repository.ssh_key, repository.ssh_public_key = keys.private, keys.public
        repository.ready = False
    elif initialise:
        restic.init_or_open(repo_of(repository))
    found = not append_only and sftp is None and bool(restic.deletes_refused(repo_of(repository)))
    repository.append_only = repository.append_only or found
    repository.save()
    if found and not repository.pruned_by:
        alert_nobody_prunes(repository, "the server refused a test deletion when it was added")
    return repository


def mark_append_only(repository: Repository, why: str) -> None:
    """Found append-only while onwatch worked with it: say so on its page and in the audit
    log, leave old backups to its server from now on, and (once: the worker that flips the
    flag is the one that tells) alert when nobody is named to remove them."""
    first = Repository.objects.filter(pk=repository.pk, append_only=False).update(append_only=True)
    repository.append_only = True
    if not first:
        return  # another worker found it a moment ago, and told
    audit.record(
        "backup-repository-append-only",
        actor="onwatch",
        org=repository.org,
        target=repository.name,
        id=repository.pk,
        why=why,
    )
    if not repository.pruned_by:
        alert_nobody_prunes(repository, why)


def alert_nobody_prunes(repository: Repository, why: str) -> None:
    """An append-only copy found by onwatch has nobody named to remove its old backups:
    it grows for ever unless someone is told to."""
    from onwatch.alerts.services import raise_alert

    raise_alert(
        org=repository.org,
        title=f"{repository.name} keeps every backup: name who removes old ones",
        body=(
            f"onwatch found that the server of the repository {repository.name} refuses "
            f"deletions ({why}). That protects the backups, but onwatch can no longer "
            "remove old ones there, so the repository grows until its disk or bill is full.\n"
            "What to do: on the repository's page press Change and name who removes old "
            "backups there (the person or job that runs its server), and have them do it "
            "on a schedule."
        ),
        link=reverse("backup_repository", args=[repository.pk]),
        notify_type="warning",
    )


def add_source(org: Organization, name: str, kind: str, **fields: Any) -> Source:
    return Source.objects.create(org=org, name=name, kind=kind, **fields)


def add_plan(
    source: Source,
    name: str,
    copies: list[Repository],
    cron: str = "0 3 * * *",
    tz: str = "UTC",
    drill_cron: str = WEEKLY_DRILL,
    **fields: Any,
) -> Plan:
    with transaction.atomic():
        plan = Plan.objects.create(org=source.org, source=source, name=name, **fields)
        plan.copies.set(copies)
        plan.schedule = Schedule.objects.create(
            org=source.org,
            name=f"Backup {name}",
            kind="backups.run",
            payload={"plan": plan.pk},
            cron=cron,
            tz=tz,
        )
        plan.drill_schedule = Schedule.objects.create(
            org=source.org,
            name=f"Restore drill {name}",
            kind="backups.drill",
            payload={"plan": plan.pk},
            cron=drill_cron,
            tz=tz,
        )
        plan.save(update_fields=["schedule", "drill_schedule"])
    return plan


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
