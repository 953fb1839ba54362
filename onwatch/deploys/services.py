"""Services and their pipelines: the one place that creates and changes them, with the
audit entry. The pages, the API and the CLI parse what they are given and call these.

Secret values go in and never come out again here: audit entries name secrets, never
their values, and nothing but a pipeline's steps reads them.
"""

from __future__ import annotations

import math
import os
import re
import secrets as tokens
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Annotated, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from onwatch.alerts import services as alert_services
from onwatch.backups import services as backup_services
from onwatch.core import jobs, ssh
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.masking import Masker
from onwatch.core.models import ENDED as JOB_ENDED
from onwatch.core.models import Job, JobState, Organization
from onwatch.core.validators import MAX_ID, Text
from onwatch.deploys import caddy, git, hosts, junit, procman, svcusers, workdir
from onwatch.deploys.models import ENDED as DEPLOY_ENDED
from onwatch.deploys.models import (
    THIS_MACHINE,
    Deploy,
    DeployKind,
    Host,
    HostKey,
    Pipeline,
    Release,
    ReleaseState,
    Service,
    ServiceHost,
    State,
    Trigger,
    Watch,
    WatchState,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from onwatch.deploys.switch import Felt, Machine

KIND = "deploys.pipeline"
DEPLOY_KIND = "deploys.deploy"
POLL_KIND = "deploys.poll"
WATCH_KIND = "deploys.watch"
# After a worker died between two hosts: those on the new release go back (releases.py).
GOING_BACK_KIND = "deploys.going_back"
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
# Names onwatch sets for every step itself: a secret of that name would break the step.
RESERVED = {"PATH", "HOME", "LANG", "LC_ALL", "CI", "TMPDIR", "PWD", "ONWATCH_PIPELINE"}
MAX_SECRET = 64 * 1024
# Webhook deliveries (and the ids that refuse a replay) are kept this long.
DELIVERIES_KEPT = timedelta(days=30)
BRANCH = r"^[A-Za-z0-9._/-]+$"


class Refusal(ValueError):
    """The service cannot be saved like this; `field` names the setting at fault."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class OnItsWay(Refusal):
    """The same rollback is queued or running already: `deploy` is that one."""

    def __init__(self, message: str, deploy: Deploy) -> None:
        super().__init__(message, "to")
        self.deploy = deploy


class ServiceFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text = Field(min_length=1, max_length=100)
    git_url: Text = Field(min_length=1, max_length=500)
    branch: Text = Field(default="main", min_length=1, max_length=200, pattern=BRANCH)
    supersede: bool = Field(
        default=True, description="A newer pipeline of the branch cancels the older one"
    )
    poll_minutes: int | None = Field(
        default=None, ge=1, le=1440, description="Ask the repository for new commits this often"
    )
    alert_channels: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None,
        max_length=100,
        description="Ids of the organization's channels that hear about its pipelines; "
        "null: every channel, also those added later",
    )
    backup_plan_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="The backup plan a deploy runs first when its release has migrations "
        "(a release command); null: none",
    )


# Kept apart from the service's own columns: a many-to-many and a flag.
CHANNEL_FIELDS = {"alert_channels"}


def channels_chosen(service: Service) -> list[int] | None:
    """The ids of the channels the service chose, or None for every channel."""
    return None if service.all_channels else sorted(c.pk for c in service.channels.all())


def _set_channels(service: Service, chosen: list[alert_services.Channel] | None) -> None:
    service.all_channels = chosen is None
    service.save(update_fields=["all_channels"])
    service.channels.set(chosen or [])


def local_repository_problem(url: str, own: Service | None = None) -> str | None:
    """A repository on this machine is fetched by onwatch itself, outside the sandbox: never
    one in its work folder (another service's workspace) or data directory (its own files),
    but for the copy of `own` that people push to onwatch. Links are followed, as git would."""
    path = git.local_path(url)
    if path is None:
        return None
    real = Path(os.path.realpath(path))
    if own is not None and own.pk and real == Path(os.path.realpath(pushed_repository(own))):
        return None
    for what, folder in (("work folder", settings.WORK_DIR), ("data directory", settings.DATA_DIR)):
        top = Path(os.path.realpath(folder))
        if real == top or top in real.parents:
            return f"{path} is in onwatch's {what}, which no service may read"
    return None


def _chosen_channels(
    org: Organization, fields: ServiceFields
) -> list[alert_services.Channel] | None:
    if fields.alert_channels is None:
        return None
    if not fields.alert_channels:
        raise Refusal(
            "Choose at least one channel, or every channel: with none, a failed pipeline "
            "would reach only a pusher who set a channel of their own",
            "alert_channels",
        )
    try:
        return alert_services.channels_of(org, fields.alert_channels)
    except alert_services.Refused as e:
        raise Refusal(str(e), "alert_channels") from None


def check(org: Organization, fields: ServiceFields, service: Service | None) -> None:
    problem = git.url_problem(fields.git_url)
    if problem:
        raise Refusal(f"The repository's address is not usable: {problem}", "git_url")
    if problem := local_repository_problem(fields.git_url, service):
        raise Refusal(f"The repository's address is not usable: {problem}", "git_url")
    if ".." in fields.branch or fields.branch.startswith(("-", "/")):
        raise Refusal("That is not a branch name git accepts", "branch")
    others = Service.objects.filter(org=org, name=fields.name)
    if service is not None:
        others = others.exclude(pk=service.pk)
    if others.exists():
        raise Refusal(f"Another service is already called {fields.name!r}", "name")
    if fields.backup_plan_id is not None and (
        problem := backup_services.plan_problem(org, fields.backup_plan_id)
    ):
        raise Refusal(problem, "backup_plan_id")


def check_secret(name: str, value: str) -> None:
    if not SECRET_NAME.fullmatch(name):
        raise Refusal(
            f"{name!r} cannot be an environment variable's name: use letters, digits and _, "
            "not starting with a digit",
            "secret_name",
        )
    if name.upper() in RESERVED:
        raise Refusal(f"onwatch sets {name} for every step itself; pick another name", "name")
    if "\x00" in value or len(value.encode()) > MAX_SECRET:
        raise Refusal("A secret's value must be text of at most 64 KiB", "secret_value")


def add_service(
    org: Organization, fields: ServiceFields, actor: Actor, secrets: dict[str, str] | None = None
) -> Service:
    check(org, fields, None)
    chosen = _chosen_channels(org, fields)
    for name, value in (secrets or {}).items():
        check_secret(name, value)
    pair = ssh.new_key_pair(f"onwatch deploy key for {fields.name}")
    columns = fields.model_dump(exclude=CHANNEL_FIELDS)
    values: dict[str, Any] = {**columns, "secrets": dict(secrets or {})}
    service = Service(
        org=org,
        deploy_key=pair.private,
        deploy_public_key=pair.public,
        webhook_secret=new_secret(),
        **values,
    )
    try:
        with transaction.atomic():
            service.save()
            _set_channels(service, chosen)
            actor.record(
                "service-added",
                org,
                service.name,
                id=service.pk,
                git_url=service.git_url,
                branch=service.branch,
                secrets=service.secret_names,
                alert_channels=channels_chosen(service),
                backup_plan=service.backup_plan_id,
            )
    except IntegrityError:
        raise Refusal(f"Another service is already called {fields.name!r}", "name") from None
    return service


def change_service(service: Service, fields: ServiceFields, actor: Actor) -> list[str]:
    check(service.org, fields, service)
    chosen = _chosen_channels(service.org, fields)
    columns = fields.model_dump(exclude=CHANNEL_FIELDS)
    changed = [k for k, v in columns.items() if getattr(service, k) != v]
    if channels_chosen(service) != (sorted(c.pk for c in chosen) if chosen is not None else None):
        changed.append("alert_channels")
    if not changed:
        return []
    moved = "git_url" in changed and git.ssh_endpoint(service.git_url) != git.ssh_endpoint(
        fields.git_url
    )
    for name, value in columns.items():
        setattr(service, name, value)
    if moved:
        # Another server: its host key is pinned anew on first use.
        service.known_hosts = ""
        changed.append("known_hosts")
    with transaction.atomic():
        service.save()
        _set_channels(service, chosen)
        actor.record("service-changed", service.org, service.name, id=service.pk, changed=changed)
    return changed


def set_backup_plan(service: Service, plan_id: int | None, actor: Actor) -> str:
    """Name the backup plan (None: none) a deploy of the service runs before a release's
    migrations. What it is now, in one line."""
    if plan_id is not None and (problem := backup_services.plan_problem(service.org, plan_id)):
        raise Refusal(problem, "backup_plan_id")
    with transaction.atomic():
        service.backup_plan_id = plan_id
        service.save(update_fields=["backup_plan"])
        actor.record(
            "service-changed", service.org, service.name, id=service.pk, changed=["backup_plan_id"]
        )
    if plan_id is None:
        return f"{service.name} deploys without a backup before migrations"
    plan = backup_services.plan_name(plan_id)
    return f"a deploy of {service.name} backs up plan {plan} before its migrations"


def set_secret(service: Service, name: str, value: str, actor: Actor) -> None:
    check_secret(name, value)
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        replaced = name in locked.secrets
        locked.secrets = {**locked.secrets, name: value}
        locked.save(update_fields=["secrets"])
        # The name only: the value never reaches the audit log.
        actor.record(
            "service-secret-replaced" if replaced else "service-secret-added",
            service.org,
            service.name,
            id=service.pk,
            secret=name,
        )
    service.secrets = locked.secrets


def remove_secret(service: Service, name: str, actor: Actor) -> bool:
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        if name not in locked.secrets:
            return False
        locked.secrets = {k: v for k, v in locked.secrets.items() if k != name}
        locked.save(update_fields=["secrets"])
        actor.record(
            "service-secret-removed", service.org, service.name, id=service.pk, secret=name
        )
    service.secrets = locked.secrets
    return True


# How long deleting a service waits for its running pipelines to stop (they stop within
# seconds of the cancel; one stuck on a hung mount is left to its worker).
STOP_WAIT_SECONDS = 20.0


@dataclass(frozen=True)
class Deleted:
    pipelines: int  # its pipelines, whose history went with it
    cancelled: list[int]  # those that were still queued or running


def delete_service(service: Service, confirm: str, actor: Actor) -> Deleted:
    """Remove the service and all it has: its queued and running pipelines are cancelled
    (their steps stopped), its workspaces and dependency caches on this machine removed,
    its secrets and deploy key deleted, and its history (pipelines, their steps and logs,
    webhook deliveries, polls) with it. `confirm` must be its name, so a slip on the wrong
    page or a wrong id in a script deletes nothing."""
    if confirm.strip() != service.name:
        raise Refusal(f"Type the service's name, {service.name}, to delete it", "confirm")
    # Imported here: releases.py writes through this module.
    from onwatch.deploys import releases

    # Before anything is stopped: a refusal leaves all as it was.
    releases.check_can_stop_serving(service)
    cancelled = cancel_under_way(service, actor)
    deploy_jobs = cancel_deploys(service, actor)
    wait_ended([p.job_id for p in cancelled if p.job_id is not None] + deploy_jobs)
    releases.stop_serving(service)
    mine = Job.objects.filter(kind=POLL_KIND, payload__service=service.pk)
    job_ids = [
        *service.pipelines.exclude(job=None).values_list("job_id", flat=True),
        *service.deploys.exclude(job=None).values_list("job_id", flat=True),
        *mine.values_list("id", flat=True),
    ]
    count = service.pipelines.count()
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).delete()
        jobs.forget([j for j in job_ids if j is not None])
        actor.record(
            "service-deleted",
            service.org,
            service.name,
            id=service.pk,
            git_url=service.git_url,
            pipelines=count,
            cancelled=[p.pk for p in cancelled],
        )
    workdir.remove_service_folders(service.pk)
    svcusers.remove(service.pk)
    return Deleted(count, [p.pk for p in cancelled])


def cancel_under_way(service: Service, actor: Actor) -> list[Pipeline]:
    stopped = []
    reason = f"cancelled: the service was deleted by {actor.name}"
    for pipeline in service.pipelines.filter(state__in=UNDER_WAY).select_related("job"):
        Pipeline.objects.filter(pk=pipeline.pk).update(reason=reason)
        if pipeline.job is not None:
            try:
                jobs.cancel(pipeline.job, actor=actor.name)
            except jobs.NotCancellable:
                continue  # it ended meanwhile
        stopped.append(pipeline)
    return stopped


def cancel_deploys(service: Service, actor: Actor) -> list[int]:
    """Stop the service's queued and running deploys; the ids of their jobs."""
    ids = []
    for deploy in service.deploys.filter(state__in=UNDER_WAY).select_related("job"):
        if deploy.job is not None:
            ids.append(deploy.job.pk)
            try:
                jobs.cancel(deploy.job, actor=actor.name)
            except jobs.NotCancellable:
                continue  # it ended meanwhile
    return ids


def wait_ended(job_ids: list[int]) -> None:
    """Until the workers of these jobs have stopped them (their steps killed, their
    workspaces removed), or STOP_WAIT_SECONDS."""
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    running = Job.objects.filter(id__in=job_ids).exclude(state__in=JOB_ENDED)
    while running.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def new_secret() -> str:
    return tokens.token_urlsafe(32)


def renew_webhook_secret(service: Service, actor: Actor) -> str:
    """A new webhook secret (the old one stops working at once); the caller shows it."""
    secret = new_secret()
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(webhook_secret="")
        service.webhook_secret = secret
        service.save(update_fields=["webhook_secret"])
        actor.record("service-webhook-secret-renewed", service.org, service.name, id=service.pk)
    return secret


def pin_host_keys(service: Service, known_hosts: str, actor: Actor = SYSTEM) -> None:
    """Pinned once, on the first fetch over SSH; later fetches accept only these keys."""
    with transaction.atomic():
        if not Service.objects.filter(pk=service.pk, known_hosts="").update(
            known_hosts=known_hosts
        ):
            service.refresh_from_db(fields=["known_hosts"])
            return
        actor.record(
            "service-host-key-pinned",
            service.org,
            service.name,
            id=service.pk,
            fingerprints=ssh.fingerprints(known_hosts),
        )
    service.known_hosts = known_hosts


@contextmanager
def ssh_session(
    service: Service, pinned: Callable[[str], object] = str
) -> Iterator[ssh.Session | None]:
    """The deploy key and the pinned host key, for git over SSH (None for other addresses).
    The host key is pinned on first use; `pinned` hears each new fingerprint."""
    where = git.ssh_endpoint(service.git_url)
    if where is None:
        yield None
        return
    if not service.known_hosts.strip():
        keys = ssh.scan_host_keys(where.host, where.port, what="git server")
        pin_host_keys(service, keys)
        for fp in ssh.fingerprints(service.known_hosts):
            pinned(fp)
    with ssh.Session(service.deploy_key, service.known_hosts) as session:
        yield session


def forget_host_keys(service: Service, actor: Actor) -> None:
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(known_hosts="")
        actor.record("service-host-key-forgotten", service.org, service.name, id=service.pk)
    service.known_hosts = ""


@dataclass(frozen=True)
class Rate:
    """How many of `counted` ended pipelines failed (cancelled ones are neither)."""

    failed: int
    counted: int

    @property
    def percent(self) -> float | None:
        # Too few runs make a rate that says nothing: 1 of 2 is not "50 % of the time".
        return 100 * self.failed / self.counted if self.counted >= RATE_MIN_RUNS else None

    @property
    def text(self) -> str:
        if not self.counted:
            return "no pipeline has ended yet"
        said = f"{self.failed} of {self.counted} failed"
        if self.percent is None:
            return f"{said} (not enough runs yet for a rate)"
        return f"{said} ({self.percent:.0f} %)"


@dataclass(frozen=True)
class Evidence:
    """What the readiness board shows of a service: when its tests last passed on its own
    branch, how long its pipeline takes and whether that grows, and how often it fails.
    A figure with too few runs behind it is None, never a guess."""

    last_passed: datetime | None
    # The median of the last TREND_RUNS green pipelines, and of the TREND_RUNS before.
    median_seconds: float | None
    previous_median_seconds: float | None
    green_runs: int
    recent: Rate  # the last RATE_RUNS ended pipelines
    month: Rate  # those that ended in the last RATE_DAYS days

    @property
    def change_percent(self) -> float | None:
        if self.median_seconds is None or not self.previous_median_seconds:
            return None
        return 100 * (self.median_seconds / self.previous_median_seconds - 1)

    @property
    def duration_text(self) -> str:
        if self.median_seconds is None:
            return "not enough runs yet"
        took = f"{self.median_seconds:.1f} s"
        change = self.change_percent
        if change is None:
            return f"{took} (not enough runs yet for a trend)"
        if round(change) == 0:
            return f"{took}, as before"
        return f"{took}, {abs(change):.0f} % {'slower' if change > 0 else 'faster'} than before"


TREND_RUNS = 10
# A median of fewer green runs than this is not shown: one slow run would be the figure.
TREND_MIN_RUNS = 3
RATE_RUNS = 30
RATE_DAYS = 30
RATE_MIN_RUNS = 5
COUNTED = (State.SUCCEEDED, State.FAILED, State.INTERRUPTED)


def _median_of(pipelines: list[Pipeline]) -> float | None:
    took = [p.seconds for p in pipelines if p.seconds is not None]
    return median(took) if len(took) >= TREND_MIN_RUNS else None


def evidence(service: Service) -> Evidence:
    """One function for the service's page, the API and the readiness board."""
    ended = Pipeline.objects.filter(service=service, branch=service.branch, state__in=COUNTED)
    green = list(
        ended.filter(
            state=State.SUCCEEDED, started_at__isnull=False, ended_at__isnull=False
        ).order_by("-ended_at", "-pk")[: 2 * TREND_RUNS]
    )
    recent = list(ended.order_by("-pk").values_list("state", flat=True)[:RATE_RUNS])
    since = timezone.now() - timedelta(days=RATE_DAYS)
    # Counted by the database: a busy month holds many more than RATE_RUNS.
    month = ended.filter(ended_at__gte=since).aggregate(
        counted=Count("pk"), failed=Count("pk", filter=~Q(state=State.SUCCEEDED))
    )
    last = ended.filter(state=State.SUCCEEDED).order_by("-ended_at", "-pk").first()
    return Evidence(
        last_passed=last.ended_at if last else None,
        median_seconds=_median_of(green[:TREND_RUNS]),
        previous_median_seconds=_median_of(green[TREND_RUNS:]),
        green_runs=len(green),
        recent=Rate(sum(s != State.SUCCEEDED for s in recent), len(recent)),
        month=Rate(month["failed"], month["counted"]),
    )


@dataclass(frozen=True)
class Spark:
    """A branch's last pipelines' durations as a small inline chart: the points of its
    line, the failed ones to mark, and the words that say the same to who cannot see it."""

    points: str
    failed: list[tuple[str, str]]  # each failed run's point, formatted for the SVG
    text: str
    width: int = 120
    height: int = 24


SPARK_RUNS = 30


def sparkline(service: Service, branch: str) -> Spark | None:
    """The durations of the branch's last SPARK_RUNS ended pipelines, oldest first; None
    when fewer than two have a duration (a line needs two points)."""
    rows = Pipeline.objects.filter(
        service=service,
        branch=branch,
        state__in=COUNTED,
        started_at__isnull=False,
        ended_at__isnull=False,
    ).order_by("-pk")[:SPARK_RUNS]
    runs = [(p.seconds or 0.0, p.state != State.SUCCEEDED) for p in reversed(rows)]
    if len(runs) < 2:
        return None
    return _spark(runs)


def _spark(runs: list[tuple[float, bool]]) -> Spark:
    top = max(s for s, _ in runs) or 1.0
    w, h, pad = 120, 24, 2
    step = (w - 2 * pad) / (len(runs) - 1)
    xy = [(pad + i * step, h - pad - (s / top) * (h - 2 * pad)) for i, (s, _) in enumerate(runs)]
    took = [s for s, _ in runs]
    failed = sum(f for _, f in runs)
    text = (
        f"Durations of the last {len(runs)} pipelines: shortest {min(took):.1f} s, "
        f"median {median(took):.1f} s, longest {max(took):.1f} s; {failed} failed"
    )
    return Spark(
        points=" ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
        failed=[(f"{x:.1f}", f"{y:.1f}") for (x, y), (_, f) in zip(xy, runs, strict=True) if f],
        text=text,
    )


@dataclass(frozen=True)
class Push:
    """What a trigger knows of the commit to test; author and message are a hint until
    the checkout records the commit's own."""

    commit: str = ""
    author: str = ""
    message: str = ""
    # E-mails the push names, the pusher's first, then the commit author's (a webhook's):
    # the member with one of them is who pushed.
    emails: tuple[str, ...] = ()
    # The branch pushed (a `git push` may push any); the service's own when empty.
    branch: str = ""


def member_with_email(org: Organization, email: str) -> Any:
    """The organization's member whose account has this e-mail (any case), or None."""
    if not email.strip():
        return None
    members = get_user_model().objects.filter(memberships__org=org)
    return members.filter(email__iexact=email.strip()).order_by("pk").first()


def who_pushed(org: Organization, actor: Actor, push: Push) -> tuple[Any, str]:
    """The member who pushed (None when not known), and the e-mail the push named when no
    member has it: a person running it now or pushing with their key is the actor; a
    webhook names e-mails, matched to members."""
    user = actor.user
    if user is not None and get_user_model().objects.filter(pk=user.pk, memberships__org=org):
        return user, ""
    for email in push.emails:
        if member := member_with_email(org, email):
            return member, ""
    return None, next((e.strip()[:254] for e in push.emails if e.strip()), "")


def who_hears(pipeline: Pipeline) -> list[alert_services.Channel]:
    """Who hears about a pipeline: the service's channels and the pusher's own."""
    service = pipeline.service
    chosen = deploy_channels(service)
    told = alert_services.organization_channels(service.org) if chosen is None else chosen
    own = alert_services.own_channel(service.org, pipeline.pusher)
    return told + ([own] if own else [])


def run_pipeline(service: Service, actor: Actor, trigger: str, push: Push = Push()) -> Pipeline:
    """Queue a pipeline of the service's branch now (of `push.commit` when given, else the
    branch's newest); a worker runs it in the pipelines queue, where it never waits behind
    a backup. It supersedes older ones of the branch unless the service says not to."""
    # Masked before they are kept (and before they are cut, so no part of a secret stays):
    # a webhook says what it likes, and a pipeline that never checks out shows them as sent.
    mask = Masker(service.secrets).mask
    pusher, pusher_email = who_pushed(service.org, actor, push)
    with transaction.atomic():
        pipeline = Pipeline.objects.create(
            pusher=pusher,
            pusher_email=mask(pusher_email)[:254],
            service=service,
            branch=push.branch or service.branch,
            commit=push.commit,
            author=mask(push.author)[:300],
            message=mask(push.message)[:2000],
            trigger=Trigger(trigger),
            triggered_by=actor.name[:200],
        )
        job = jobs.enqueue(KIND, {"pipeline": pipeline.pk}, org=service.org)
        Pipeline.objects.filter(pk=pipeline.pk).update(job=job)
        pipeline.job = job
        actor.record(
            "pipeline-run",
            service.org,
            service.name,
            id=pipeline.pk,
            branch=pipeline.branch,
            trigger=trigger,
            commit=push.commit,
            job=job.pk,
        )
    if service.supersede:
        supersede_older(pipeline)
    if service.domain and service.auto_deploy and pipeline.branch == service.branch:
        queue_deploy(service, SYSTEM, "pipeline", pipeline=pipeline)
    return pipeline


def pushed_repository(service: Service) -> Path:
    """The bare repository people `git push` the service to (deploys/gitserve.py)."""
    return Path(settings.DATA_DIR) / "git" / f"{service.pk}.git"


def source_url(pipeline: Pipeline) -> str:
    """Where a pipeline fetches its commit from: a pushed one from onwatch's own copy."""
    if pipeline.trigger == Trigger.PUSH:
        return str(pushed_repository(pipeline.service))
    return pipeline.service.git_url


FAILING_KEPT = 100


def record_tests(pipeline: Pipeline, report: junit.Report, mask: Callable[[str], str]) -> None:
    """The counts of the test step's report and the tests that failed (their messages
    masked: they quote the test's output), kept with the pipeline."""
    failing = [
        {"name": mask(c.name), "classname": mask(c.classname), "message": mask(c.message)}
        for c in report.cases
        if c.outcome in ("failed", "error")
    ][:FAILING_KEPT]
    counts = {
        "tests_total": report.total,
        "tests_failed": report.failed,
        "tests_errors": report.errors,
        "tests_skipped": report.skipped,
    }
    Pipeline.objects.filter(pk=pipeline.pk).update(failing_tests=failing, **counts)
    for name, value in {**counts, "failing_tests": failing}.items():
        setattr(pipeline, name, value)


UNDER_WAY = (State.QUEUED, State.RUNNING)


def supersede_older(newer: Pipeline) -> list[Pipeline]:
    """Cancel the branch's older pipelines still queued or running: their commit is no
    longer the branch's newest, so their result would say nothing people need."""
    older = Pipeline.objects.filter(
        service_id=newer.service_id, branch=newer.branch, pk__lt=newer.pk, state__in=UNDER_WAY
    ).select_related("job")
    sha = newer.commit[:7] or "the branch's newest commit"
    reason = f"superseded by pipeline #{newer.pk} for {sha}"
    stopped = []
    for pipeline in older:
        # Said first: the cancel hooks and a running pipeline's end keep a reason given.
        if not Pipeline.objects.filter(pk=pipeline.pk, state__in=UNDER_WAY).update(reason=reason):
            continue
        if pipeline.job is not None:
            try:
                jobs.cancel(pipeline.job, actor=f"pipeline #{newer.pk}")
            except jobs.NotCancellable:
                continue  # it ended meanwhile: its own outcome stands
        stopped.append(pipeline)
    return stopped


def claim_delivery(service: Service, delivery: WebhookDelivery) -> bool:
    """Save a signed delivery with its id and its body's hash claimed; False when either
    came before (a replay), in which case nothing is saved."""
    delivery.service = service
    delivery.claimed_id = delivery.delivery_id
    try:
        with transaction.atomic():
            delivery.save()
    except IntegrityError:
        delivery.pk = None
        delivery.claimed_id = None
        delivery.body_sha256 = None
        return False
    return True


def note_delivery(service: Service, delivery: WebhookDelivery) -> None:
    """Save (or update) a delivery's outcome; those older than DELIVERIES_KEPT go."""
    delivery.service = service
    delivery.save()
    WebhookDelivery.objects.filter(
        service=service, received_at__lt=timezone.now() - DELIVERIES_KEPT
    ).delete()


UNSIGNED_KEPT_PER_HOUR = 50


def note_unsigned(service: Service, delivery: WebhookDelivery) -> bool:
    """Save a delivery refused before it proved it was signed, unless the service's page
    lists UNSIGNED_KEPT_PER_HOUR of those from the last hour already: anyone can send them,
    and must not fill the table. False when not saved."""
    hour_ago = timezone.now() - timedelta(hours=1)
    recent = WebhookDelivery.objects.filter(service=service, signed=False, received_at__gt=hour_ago)
    if recent.count() >= UNSIGNED_KEPT_PER_HOUR:
        return False
    note_delivery(service, delivery)
    return True


def first_delivery(service: Service, delivery_id: str) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(service=service, claimed_id=delivery_id).first()


def first_delivery_of_body(service: Service, body_sha256: str) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(service=service, body_sha256=body_sha256).first()


def tested(service: Service, sha: str) -> Pipeline | None:
    """The branch's newest pipeline of commit `sha`, if any."""
    found = Pipeline.objects.filter(service=service, branch=service.branch, commit=sha)
    return found.order_by("-pk").first()


def note_poll(service: Service, now: datetime, sha: str = "", error: str = "") -> Service:
    """Record the answer of the poll due at `now`: the branch's newest commit, or why
    asking failed (failures counted in a row, since when)."""
    with transaction.atomic():
        locked = Service.objects.select_for_update().get(pk=service.pk)
        locked.polled_at = now
        if error:
            locked.poll_failures += 1
            locked.poll_failing_since = locked.poll_failing_since or now
            locked.poll_error = error[:2000]
        else:
            locked.polled_sha = sha
            locked.poll_failures = 0
            locked.poll_failing_since = None
            locked.poll_error = ""
        locked.save()
    return locked


def note_poll_alerted(service: Service, alerted: bool) -> None:
    Service.objects.filter(pk=service.pk).update(poll_alerted=alerted)
    service.poll_alerted = alerted


# --- hosts -------------------------------------------------------------------------------

HOST_CHECK_KIND = "deploys.host_check"
PROVIDERS = [
    "own server",
    "Hetzner",
    "OVHcloud",
    "DigitalOcean",
    "Scaleway",
    "AWS",
    "Google Cloud",
    "Azure",
]
_COST = re.compile(r"(?P<amount>\d{1,7}(?:\.\d{1,2})?)\s*(?P<currency>[A-Za-z]{3})")


def _currency(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError(f"'currency' is three letters, e.g. EUR (given: {value[:20]!r})")
    return value


class HostFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    address: Text = Field(min_length=1, max_length=300, description="user@host or user@host:port")
    port: int | None = Field(default=None, ge=1, le=65535, description="When not in the address")
    provider: Text = Field(
        default="", max_length=100, description="Own server, a VPS provider or a cloud"
    )
    monthly_cost: Decimal | None = Field(
        default=None, ge=0, max_digits=9, decimal_places=2, description="What it costs a month"
    )
    # Not a `pattern`: the API said "string should match pattern '^([A-Za-z]{3})?$'".
    currency: Annotated[Text, AfterValidator(_currency)] = Field(
        default="", description="Three letters, e.g. EUR"
    )
    allow_sudo: bool = Field(
        default=False, description="The deploy user may be root or use sudo without a password"
    )
    caddy_https: bool = Field(
        default=True, description="Caddy gets certificates and sends http on to https"
    )
    http_port: int = Field(default=80, ge=1, le=65535, description="Caddy's HTTP port")
    https_port: int = Field(default=443, ge=1, le=65535, description="Caddy's HTTPS port")
    health_port: int = Field(
        default=2020, ge=1024, le=65535, description="Caddy's own loopback port for health checks"
    )


def parse_cost(text: str) -> tuple[Decimal, str]:
    """ "12.50EUR" or "12.50 EUR"; Refusal for anything else."""
    found = _COST.fullmatch(text.strip())
    if found is None:
        raise Refusal(f"{text!r} is not a monthly cost like 12.50EUR", "monthly_cost")
    return Decimal(found["amount"]), found["currency"].upper()


def host_key(org: Organization) -> HostKey:
    """The key pair onwatch signs in to the organization's hosts with, made on first use."""
    found = HostKey.objects.filter(org=org).first()
    if found is not None:
        return found
    pair = ssh.new_key_pair(f"onwatch hosts {org.name}")
    with transaction.atomic():
        made, created = HostKey.objects.get_or_create(
            org=org, defaults={"private_key": pair.private, "public_key": pair.public}
        )
        if created:
            SYSTEM.record("host-key-made", org, "hosts", public_key=pair.public)
    return made


def this_machine(org: Organization) -> Host:
    """The machine onwatch runs on: always a host, made on first use."""
    found = Host.objects.filter(org=org, local=True).first()
    if found is not None:
        return found
    with transaction.atomic():
        made, created = Host.objects.get_or_create(
            org=org, name=THIS_MACHINE, defaults={"local": True}
        )
        if created:
            SYSTEM.record("host-added", org, made.name, id=made.pk, local=True)
    return made


def _cost_of(fields: HostFields) -> tuple[Decimal | None, str]:
    if fields.monthly_cost is not None and not fields.currency:
        raise Refusal("Give the monthly cost's currency too, e.g. EUR", "currency")
    return fields.monthly_cost, fields.currency.upper() if fields.monthly_cost is not None else ""


HOST_PORTS = ("http_port", "https_port", "health_port")


def _ports_of(fields: HostFields) -> dict[str, Any]:
    """Caddy's settings on the host; Refusal when two of its ports are the same."""
    ports = [getattr(fields, name) for name in HOST_PORTS]
    if len(set(ports)) < len(ports):
        given = ", ".join(map(str, ports))
        raise Refusal(
            f"Caddy's HTTP, HTTPS and health ports must differ (given: {given})", "http_port"
        )
    return {"caddy_https": fields.caddy_https, **dict(zip(HOST_PORTS, ports, strict=True))}


def add_host(org: Organization, fields: HostFields, actor: Actor) -> Host:
    """An SSH host, its host key fetched now and pinned: later connections accept only
    that key. Refusal (nothing saved) for a malformed address, a name taken, or a host
    that does not answer."""
    try:
        where = hosts.parse_address(fields.address, fields.port)
    except ValueError as e:
        raise Refusal(str(e), "address") from None
    name = hosts.name_of(where)
    if Host.objects.filter(org=org, name=name).exists():
        raise Refusal(f"{name} is a host already", "address")
    cost, currency = _cost_of(fields)
    caddy_settings = _ports_of(fields)
    try:
        known = ssh.scan_host_keys(where.host, where.port, what="host")
    except ssh.SshError as e:
        raise Refusal(f"{e}; nothing was saved", "address") from None
    host_key(org)
    with transaction.atomic():
        host = Host.objects.create(
            org=org,
            name=name,
            user=where.user,
            address=where.host,
            port=where.port,
            known_hosts=known,
            provider=fields.provider,
            monthly_cost=cost,
            currency=currency,
            allow_sudo=fields.allow_sudo,
            **caddy_settings,
        )
        actor.record(
            "host-added",
            org,
            name,
            id=host.pk,
            provider=host.provider,
            monthly_cost=str(cost) if cost is not None else None,
            currency=currency,
            allow_sudo=host.allow_sudo,
            **caddy_settings,
            fingerprints=ssh.fingerprints(known),
        )
    return host


def change_host(host: Host, fields: HostFields, actor: Actor) -> list[str]:
    """Provider, cost, whether root is allowed and Caddy's ports; the address stays (remove
    and add). New ports take effect at the host's next deploy, which writes Caddy's
    configuration there again."""
    cost, currency = _cost_of(fields)
    wanted = {
        "provider": fields.provider,
        "monthly_cost": cost,
        "currency": currency,
        "allow_sudo": fields.allow_sudo,
        **_ports_of(fields),
    }
    changed = [k for k, v in wanted.items() if getattr(host, k) != v]
    if not changed:
        return []
    for name, value in wanted.items():
        setattr(host, name, value)
    with transaction.atomic():
        host.save(update_fields=changed)
        actor.record("host-changed", host.org, host.name, id=host.pk, changed=changed)
    return changed


def remove_host(host: Host, actor: Actor) -> None:
    if host.local:
        raise Refusal("This machine is always a host: onwatch runs on it", "host")
    if names := list(host.placements.values_list("service__name", flat=True)):
        raise Refusal(
            f"{', '.join(names)} {'runs' if len(names) == 1 else 'run'} on {host.name}; take "
            f"{host.name} out of their hosts (a service's page, Set-up, or onwatch services "
            "hosts SERVICE HOST…) first",
            "host",
        )
    with transaction.atomic():
        Host.objects.filter(pk=host.pk).delete()
        jobs.forget(
            list(
                Job.objects.filter(kind=HOST_CHECK_KIND, payload__host=host.pk).values_list(
                    "id", flat=True
                )
            )
        )
        actor.record("host-removed", host.org, host.name, id=host.pk)


def forget_host_key(host: Host, actor: Actor) -> None:
    """For a host reinstalled on purpose: its next check pins the key it shows then."""
    with transaction.atomic():
        Host.objects.filter(pk=host.pk).update(known_hosts="")
        actor.record(
            "host-key-forgotten",
            host.org,
            host.name,
            id=host.pk,
            fingerprints=ssh.fingerprints(host.known_hosts),
        )
    host.known_hosts = ""


def pin_host_key(host: Host, known_hosts: str) -> None:
    """Pinned on first use only: a key already pinned is never replaced here."""
    with transaction.atomic():
        if not Host.objects.filter(pk=host.pk, known_hosts="").update(known_hosts=known_hosts):
            host.refresh_from_db(fields=["known_hosts"])
            return
        SYSTEM.record(
            "host-key-pinned",
            host.org,
            host.name,
            id=host.pk,
            fingerprints=ssh.fingerprints(known_hosts),
        )
    host.known_hosts = known_hosts


def queue_host_check(host: Host, actor: Actor, prepare: bool = False) -> Job:
    """A check (and with `prepare`, installing what onwatch can) as a job; its result is
    stored on the host."""
    with transaction.atomic():
        # Preparing downloads packages for minutes: in the long queue, never holding up
        # the short one's polls and checks.
        queue = "long" if prepare else "short"
        payload = {"host": host.pk, "prepare": prepare}
        job = jobs.enqueue(HOST_CHECK_KIND, payload, org=host.org, queue=queue)
        actor.record(
            "host-check-queued", host.org, host.name, id=host.pk, prepare=prepare, job=job.pk
        )
    return job


def record_host_check(
    host: Host,
    ready: bool,
    found: list[dict[str, Any]],
    error: str = "",
    clock_skew: float | None = None,
) -> Host:
    """A check's result; `clock_skew` None (not read) keeps the last one read, with when."""
    host.checked_at = timezone.now()
    host.ready, host.findings, host.check_error = ready, found, error[:2000]
    fields = ["checked_at", "ready", "findings", "check_error"]
    if clock_skew is not None:
        host.clock_skew, host.clock_read_at = clock_skew, host.checked_at
        fields += ["clock_skew", "clock_read_at"]
    host.save(update_fields=fields)
    return host


def note_host_alerted(host: Host, alerted: bool) -> None:
    Host.objects.filter(pk=host.pk).update(alerted=alerted)
    host.alerted = alerted


# --- the hosts a service runs on ---------------------------------------------------------


def placements(service: Service) -> list[ServiceHost]:
    """The hosts the service runs on, in the order its deploys go through them; [] for this
    machine only (as a service without hosts always ran)."""
    return list(service.placements.select_related("host").order_by("position", "id"))


def hosts_named(org: Organization, names: list[str]) -> list[Host]:
    """The organization's hosts by name ("this machine" included), in the order given;
    Refusal naming the first unknown one."""
    found = {h.name: h for h in Host.objects.filter(org=org, name__in=names)}
    if THIS_MACHINE in names and THIS_MACHINE not in found:
        found[THIS_MACHINE] = this_machine(org)
    for name in names:
        if not name.strip():
            raise Refusal(
                "A host's name is empty: name each host as the Hosts page (or onwatch hosts "
                "list) shows it",
                "hosts",
            )
        if name not in found:
            raise Refusal(
                f"{name} is not a host of {org.name}: add it under Hosts (or onwatch hosts add)",
                "hosts",
            )
    return [found[n] for n in names]


def _check_placeable(service: Service, chosen: list[Host]) -> None:
    seen: set[int] = set()
    for host in chosen:
        if host.org_id != service.org_id:
            raise Refusal(f"{host.name} is not a host of {service.org.name}", "hosts")
        if host.pk in seen:
            raise Refusal(f"{host.name} is named twice; name each host once", "hosts")
        seen.add(host.pk)
        if not host.local and host.ready is not True:
            raise Refusal(
                f"{host.name} has not passed its check: check it on its page under Hosts (or "
                f"onwatch hosts check {host.name}) and fix what it says first",
                "hosts",
            )


def set_service_hosts(
    service: Service, chosen: list[Host], actor: Actor, look: bool = False
) -> list[str]:
    """The hosts the service runs on, in deploy order ([]: this machine only). A host kept
    keeps its slot ports; on a host taken off, the service stops: what could not be
    stopped (a host that does not answer) is returned, one line a host, for a person to
    hear. The next deploy goes to the hosts as they are now. Refused while a deploy of the
    service runs (it would end on the hosts it started with; one starting meanwhile waits),
    and when every host serving it would be taken off (see _check_still_served). With
    `look` (a person asking: the page, the API, the command), refused too when a host new
    to the service does not let onwatch sign in now."""
    _check_placeable(service, chosen)
    if look:
        _check_answering(service, chosen)
    if len(chosen) == 1 and chosen[0].local:
        chosen = []  # this machine alone: as a service without hosts runs
    # Imported here: releases.py writes through this module.
    from onwatch.deploys import releases

    # Held throughout: a deploy starting meanwhile would read rows about to vanish.
    with releases.no_deploy_running(service, "change its hosts", "hosts"):
        return _placed(service, chosen, actor)


def _check_answering(service: Service, chosen: list[Host]) -> None:
    """Walked: a host whose check passed days ago was put on a service after it went away,
    and the next deploy failed at once. Hosts kept are not asked (taking a host gone for
    good off must still work)."""
    from onwatch.deploys import hostchecks

    placed = {p.host_id for p in placements(service)}
    said = hostchecks.answering_now([h for h in chosen if h.pk not in placed])
    if whys := [why for why in said.values() if why]:
        raise Refusal(
            f"{service.name}'s hosts were not changed: {'; '.join(whys)}; then set them again",
            "hosts",
        )


def _placed(service: Service, chosen: list[Host], actor: Actor) -> list[str]:
    from onwatch.deploys import releases

    _check_still_served(service, chosen)
    left = releases.stop_where_not(service, chosen)
    # A host kept keeps its slots and what was seen serving there.
    kept = {p.host_id: p for p in placements(service)}
    with transaction.atomic():
        ServiceHost.objects.filter(service=service).delete()
        for i, h in enumerate(chosen):
            was = kept.get(h.pk) or ServiceHost()
            ServiceHost.objects.create(
                service=service,
                host=h,
                position=i,
                slot_ports=was.slot_ports,
                serving=was.serving,
                serving_at=was.serving_at,
            )
        actor.record(
            "service-hosts-set",
            service.org,
            service.name,
            id=service.pk,
            hosts=[h.name for h in chosen],
            not_stopped=left,
        )
    return left


def _check_still_served(service: Service, chosen: list[Host]) -> None:
    """Refusal when every host serving the service would be taken off: the hosts taken
    off stop at once, and new ones serve only from the next deploy (the site would be down
    until then). Hosts that do not answer serve nobody: a host gone for good can go."""
    from onwatch.deploys import releases

    serving = _serving_hosts(service)
    staying = {h.pk for h in chosen} if chosen else {this_machine(service.org).pk}
    if not serving or {h.pk for h in serving} & staying:
        return
    serving = releases.answering(service, serving)
    if not serving:
        return
    names = ", ".join(h.name for h in serving)
    kept = " ".join(f"'{h.name}'" for h in [*serving, *(h for h in chosen if h not in serving)])
    raise Refusal(
        f"{service.name} serves only on {names}, which this change would stop before any "
        f"other host serves it: add the new hosts beside (onwatch services hosts "
        f"{service.name} {kept}), deploy, then take {names} off",
        "hosts",
    )


def _serving_hosts(service: Service) -> list[Host]:
    """The hosts a release of the service served on at its last look, while it has a live
    release (this machine, for one without hosts)."""
    if live_release(service) is None:
        return []
    rows = placements(service)
    if not rows:
        return [this_machine(service.org)]
    return [r.host for r in rows if r.serving.startswith("release ")]


def placements_serving(said: dict[int, str]) -> None:
    """What serves on each host of a service (placement id -> label), as just read."""
    now = timezone.now()
    for pk, label in said.items():
        ServiceHost.objects.filter(pk=pk).update(serving=label[:300], serving_at=now)


def ports_kept_on(host: Host) -> set[int]:
    """Every service's slot ports on `host`, served from or not (this machine's are the
    services' own)."""
    kept = (
        Service.objects.values_list("slot_ports", flat=True)
        if host.local
        else ServiceHost.objects.filter(host=host).values_list("slot_ports", flat=True)
    )
    return {int(p) for ports in kept for p in ports}


def placement_ports(placement: ServiceHost, ports: list[int]) -> None:
    """The slot ports a host gave for the service on its first deploy there: kept."""
    placement.slot_ports = ports
    placement.save(update_fields=["slot_ports"])


# --- domains, releases, deploys and rollbacks ----------------------------------------------

# Releases kept ready for a rollback; the live one and the one live before it always are.
KEEP_RELEASES = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slot_ports() -> list[int]:
    """Two loopback ports no other service's releases use (caddy.put_site checks again)."""
    taken = {p for ports in Service.objects.values_list("slot_ports", flat=True) for p in ports}
    chosen: list[int] = []
    while len(chosen) < 2:
        port = _free_port()
        if port not in taken and port not in chosen:
            chosen.append(port)
    return chosen


def set_domain(service: Service, domain: str, auto_deploy: bool, actor: Actor) -> None:
    """Where the service answers; "" takes it off Caddy (its running release is not
    stopped). A live release moves to the new domain at once."""
    domain = domain.strip().lower().rstrip(".")
    if domain and (why := caddy.site_problem(caddy.Site(domain, (1024, 1025)))):
        raise Refusal(why[:1].upper() + why[1:], "domain")
    if domain and Service.objects.filter(domain=domain).exclude(pk=service.pk).exists():
        raise Refusal(f"Another service already answers at {domain}", "domain")
    old_domain = service.domain

    def change() -> None:
        service.domain, service.auto_deploy = domain, auto_deploy
        if domain and not service.slot_ports:
            service.slot_ports = _slot_ports()
        service.save(update_fields=["domain", "auto_deploy", "slot_ports"])
        actor.record(
            "service-domain-set",
            service.org,
            service.name,
            id=service.pk,
            domain=domain,
            auto_deploy=auto_deploy,
        )

    # Imported here: releases.py writes through this module.
    from onwatch.deploys import releases

    try:
        with transaction.atomic():
            if domain == old_domain:
                change()
            else:
                # What serves moves with the domain, so the old one leaves Caddy with it.
                releases.move_site(service, old_domain, change)
    except Refusal:
        service.refresh_from_db()
        raise


def queue_deploy(
    service: Service,
    actor: Actor,
    trigger: str,
    commit: str = "",
    pipeline: Pipeline | None = None,
    skip_backup: bool = False,
) -> Deploy:
    """Build a release of `commit` (the pipeline's, else the branch's newest) and make it
    live; a deploy after a pipeline waits for it and is cancelled when it does not pass.
    `skip_backup`: on purpose, without the backup before migrations (audited)."""
    if not service.domain:
        raise Refusal(f"{service.name} has no domain yet; set one before deploying", "domain")
    if commit and not re.fullmatch(r"[0-9a-fA-F]{4,64}", commit):
        raise Refusal(f"{commit!r} is not a commit id (hexadecimal, 4 to 64 digits)", "commit")
    with transaction.atomic():
        deploy = Deploy.objects.create(
            service=service,
            pipeline=pipeline,
            commit=commit.lower(),
            trigger=trigger,
            triggered_by=actor.name[:200],
            skip_backup=skip_backup,
        )
        after = pipeline.job if pipeline is not None else None
        _enqueue_deploy(deploy, after)
        actor.record(
            "deploy-queued",
            service.org,
            service.name,
            id=deploy.pk,
            commit=commit,
            pipeline=pipeline.pk if pipeline else None,
            job=deploy.job_id,
            skip_backup=skip_backup,
        )
    return deploy


def _enqueue_deploy(deploy: Deploy, after: Job | None, queue: str = "") -> None:
    job = jobs.enqueue(
        DEPLOY_KIND,
        {"deploy": deploy.pk},
        org=deploy.service.org,
        after=after,
        queue=queue or jobs.QUEUE_OF.get(DEPLOY_KIND, "pipelines"),
    )
    Deploy.objects.filter(pk=deploy.pk).update(job=job)
    deploy.job = job


def older_deploy_due(deploy: Deploy) -> bool:
    """Whether an older deploy of the service is queued and could start now (not waiting
    for its pipeline): it goes first, so a newer commit is never replaced by an older one."""
    older = Deploy.objects.filter(
        service_id=deploy.service_id,
        pk__lt=deploy.pk,
        state=State.QUEUED,
        job__state=JobState.QUEUED,
    )
    due = Q(job__after__isnull=True) | Q(job__after__state=JobState.SUCCEEDED)
    return older.filter(due).exists()


def live_release(service: Service) -> Release | None:
    """The release the last successful switch made live (the deploy's state is in the
    database, what serves is in Caddy: switch.py reads that one)."""
    done = service.deploys.filter(state=State.SUCCEEDED, release__isnull=False)
    last = done.order_by(went_live().desc(), "-pk").select_related("release").first()
    return last.release if last else None


def rolled_back_notes(service: Service) -> dict[int, str]:
    """Each release of the service its watch rolled back, with when ("rolled back by its
    watch at 09:22 UTC"): the releases list and page named none, with a button to make one
    live again beside it."""
    found = Watch.objects.filter(deploy__service=service, state=WatchState.ROLLED_BACK)
    notes = {}
    for w in found.select_related("deploy").order_by("pk"):
        when = w.detected_at or w.ended_at or w.started_at
        if w.deploy.release_id is not None:
            notes[w.deploy.release_id] = (
                f"rolled back by its watch at {when.astimezone(UTC):%H:%M} UTC"
            )
    return notes


def previous_release(service: Service) -> Release | None:
    """The release that was live before the live one."""
    live = live_release(service)
    done = service.deploys.filter(state=State.SUCCEEDED, release__isnull=False)
    for deploy in done.order_by(went_live().desc(), "-pk").select_related("release"):
        if deploy.release is not None and deploy.release != live:
            return deploy.release
    return None


def rollback_target(service: Service, to: int | None) -> Release:
    """The release a rollback makes live, or Refusal saying in one line why none can be."""
    live = live_release(service)
    if live is None:
        raise Refusal(f"{service.name} has no live release to roll back from", "to")
    target = service.releases.filter(pk=to).first() if to is not None else previous_release(service)
    if target is None:
        said = f"{service.name} has no release {to}" if to else "there is no earlier release"
        raise Refusal(f"Cannot roll back: {said}", "to")
    if to is None:
        _check_not_rolled_back(target)
    if target == live:
        raise Refusal(f"Cannot roll back: {target.label} is the live release already", "to")
    if target.state != ReleaseState.READY:
        raise Refusal(
            f"Cannot roll back to {target.label}: it is {target.state} "
            f"({target.reason or 'not kept'}); deploy its commit again instead",
            "to",
        )
    _check_built_everywhere(service, target)
    _check_no_rollback_past(live, target)
    return target


def rollback_still_wanted(rollback: Deploy) -> Release:
    """What a rollback about to run makes live, checked again now: it may have waited behind
    other deploys, and what it was asked against may have changed meanwhile (Refusal). A
    watch's rollback runs only while the release it watched is the live one still: it must
    never revert a newer deploy."""
    target = rollback_target(rollback.service, rollback.release_id)
    found = Watch.objects.filter(rollback=rollback).select_related("deploy__release").first()
    watched = found.deploy.release if found else None
    if found is not None and live_release(rollback.service) != watched:
        label = watched.label if watched else f"the release of deploy #{found.deploy_id}"
        raise Refusal(
            f"Not rolled back: {label}, which the watch found answering with errors, is no "
            "longer the live release (a newer deploy or rollback replaced it)",
            "to",
        )
    return target


def _check_not_rolled_back(target: Release) -> None:
    """ "Roll back" after the watch rolled a release back would make that very release live
    again (it is the one live before): only when someone names it on purpose. A release
    made live again by hand since is no longer the watch's to refuse."""
    done = target.service.deploys.filter(state=State.SUCCEEDED, release=target)
    last = done.order_by(went_live().desc(), "-pk").first()
    found = Watch.objects.filter(deploy=last, state=WatchState.ROLLED_BACK).first()
    if last is None or found is None:
        return
    when = (found.detected_at or found.ended_at or last.created_at).astimezone(UTC)
    raise Refusal(
        f"Cannot roll back: the release before, {target.label}, is the one its watch rolled "
        f"back at {when:%H:%M} UTC (it answered worse than the release now live); to make it "
        f"live anyway, name it (Make live again, or onwatch rollback {target.service.name} "
        f"--to {target.pk})",
        "to",
    )


def never_built_on(service: Service, release: Release) -> list[str]:
    """The service's hosts now that `release` was never built on (they became its hosts
    after it): a rollback to it could only fail there. Read as the rollback itself reads
    it (releases.Run.check_folders): places of this machine share its one build."""
    from onwatch.deploys import places, releases

    built = releases.built_on(release)
    if built is None:
        return []
    try:
        targets = releases.targets_of(service)
    except places.PlaceError:
        return []  # a host's key forgotten: the rollback says so, and what to do
    try:
        return [
            t.place.name
            for t in targets
            if (THIS_MACHINE if t.local else t.place.name) not in built
        ]
    finally:
        for t in targets:
            t.place.close()


def _check_built_everywhere(service: Service, target: Release) -> None:
    missing = never_built_on(service, target)
    if missing:
        raise Refusal(
            f"Cannot roll back to {target.label}: it was never built on {', '.join(missing)}, "
            f"which became a host of {service.name} after it; to have its code live again, "
            f"deploy its commit (Deploy this commit {target.commit[:7]}, or onwatch deploy "
            f"{service.name} --commit {target.commit[:7]})",
            "to",
        )


def _check_no_rollback_past(live: Release, target: Release) -> None:
    low, high = sorted((live.pk, target.pk))
    if target.pk > live.pk:
        return  # forward to a newer kept release: nothing to undo
    blocking = live.service.releases.filter(pk__gt=low, pk__lte=high, no_rollback_past=True)
    found = blocking.order_by("pk").first()
    if found is not None:
        why = found.no_rollback_why or "its release command changed the data for good"
        raise Refusal(
            f"Cannot roll back to {target.label}: {found.label} is marked "
            f'"no rollback past this" ({why}); older code may not run on the data it '
            "changed. Deploy a fixed commit instead.",
            "to",
        )


def queue_rollback(
    service: Service, actor: Actor, trigger: str, to: int | None = None, queue: str = ""
) -> Deploy:
    """Make the previous (or chosen kept) release live again, without a rebuild; in `queue`
    rather than the deploys' own (an automatic rollback must not wait behind a pipeline)."""
    with transaction.atomic():
        # Two clicks at once: the second waits here for the first's rollback, then sees it.
        Service.objects.select_for_update().get(pk=service.pk)
        target = rollback_target(service, to)
        if trigger != "watch":
            _check_not_on_its_way(service, target)
        deploy = Deploy.objects.create(
            service=service,
            kind=DeployKind.ROLLBACK,
            release=target,
            commit=target.commit,
            trigger=trigger,
            triggered_by=actor.name[:200],
        )
        _enqueue_deploy(deploy, None, queue)
        actor.record(
            "rollback-queued",
            service.org,
            service.name,
            id=deploy.pk,
            release=target.pk,
            commit=target.commit,
            job=deploy.job_id,
        )
    return deploy


def _check_not_on_its_way(service: Service, target: Release) -> None:
    """A second click (a double click, a second tab's stale button) would queue the same
    rollback again, which then failed, alerting, as its release was live already. (The
    watch's own is not refused: it asks for the rollback of what it watched.)"""
    pending = service.deploys.filter(
        kind=DeployKind.ROLLBACK, release=target, state__in=[State.QUEUED, State.RUNNING]
    ).first()
    if pending is not None:
        raise OnItsWay(f"Rollback #{pending.pk} to {target.label} is on its way already", pending)


def mark_no_rollback_past(release: Release, why: str, actor: Actor, on: bool = True) -> None:
    if on and not why.strip():
        raise Refusal("Say why (what its release command changed), for whoever tries", "why")
    with transaction.atomic():
        release.no_rollback_past, release.no_rollback_why = on, why.strip()[:500] if on else ""
        release.save(update_fields=["no_rollback_past", "no_rollback_why"])
        actor.record(
            "release-no-rollback-past" if on else "release-rollback-allowed",
            release.service.org,
            release.service.name,
            id=release.pk,
            why=release.no_rollback_why,
        )


def new_release(deploy: Deploy, commit: str) -> Release:
    """The row of a release about to be built, with the folder it is built in."""
    with transaction.atomic():
        release = Release.objects.create(
            service=deploy.service, pipeline=deploy.pipeline, commit=commit
        )
        release.directory = str(workdir.release_folder(deploy.service_id, release.pk))
        release.save(update_fields=["directory"])
        Deploy.objects.filter(pk=deploy.pk).update(release=release, commit=commit)
    deploy.release, deploy.commit = release, commit
    return release


def release_checked_out(release: Release, sha: str, message: str) -> None:
    release.commit, release.message = sha, message[:2000]
    release.save(update_fields=["commit", "message"])
    Deploy.objects.filter(release=release, commit="").update(commit=sha)


def release_built(release: Release, web_command: str, health_path: str) -> None:
    release.state, release.web_command = ReleaseState.READY, web_command
    release.health_path = health_path
    release.save(update_fields=["state", "web_command", "health_path"])


def backup_before_migrations(deploy: Deploy) -> int | None:
    """Start the backup a deploy takes before its release's migrations: the id of its
    job, or None when the service names no plan or the deploy was asked to go without."""
    plan = deploy.service.backup_plan_id
    if plan is None or deploy.skip_backup:
        return None
    why = f"before the migrations of deploy #{deploy.pk} of {deploy.service.name}"
    return backup_services.start_backup(plan, SYSTEM, why)


def release_backed_up(release: Release, snapshot: str, at: datetime | None) -> None:
    release.backup_snapshot, release.backed_up_at = snapshot[:64], at or timezone.now()
    release.save(update_fields=["backup_snapshot", "backed_up_at"])


def release_failed(release: Release, reason: str) -> None:
    release.state, release.reason = ReleaseState.FAILED, reason[:2000]
    release.save(update_fields=["state", "reason"])


def releases_to_prune(service: Service) -> list[Release]:
    """Built releases beyond the newest KEEP_RELEASES, never the live one nor the one live
    before it (which a rollback brings back)."""
    keep = {r.pk for r in (live_release(service), previous_release(service)) if r is not None}
    built = service.releases.filter(state__in=[ReleaseState.READY, ReleaseState.FAILED])
    old = list(built.order_by("-pk")[KEEP_RELEASES:])
    return [r for r in old if r.pk not in keep]


def release_pruned(release: Release) -> None:
    with transaction.atomic():
        release.state = ReleaseState.PRUNED
        release.reason = f"removed after {KEEP_RELEASES} newer releases were kept"
        release.save(update_fields=["state", "reason"])
        SYSTEM.record(
            "release-pruned",
            release.service.org,
            release.service.name,
            id=release.pk,
            directory=release.directory,
        )


def deploy_started(deploy: Deploy) -> None:
    Deploy.objects.filter(pk=deploy.pk).update(state=State.RUNNING, started_at=timezone.now())
    deploy.refresh_from_db()


def deploy_step(deploy: Deploy, step: dict[str, Any]) -> None:
    """Add or update (by its start) one step of the deploy's timeline."""
    steps = [s for s in deploy.steps if s["started"] != step["started"]]
    deploy.steps = sorted([*steps, step], key=lambda s: str(s["started"]))
    Deploy.objects.filter(pk=deploy.pk).update(steps=deploy.steps)


def deploy_switched(deploy: Deploy, at: datetime) -> None:
    """Its release went live `at` (Caddy could send it requests from then on), while the
    old one still drains: what "went live" means to people and to the errors app."""
    Deploy.objects.filter(pk=deploy.pk).update(switched_at=at)
    deploy.switched_at = at


def deploy_live_on_host(deploy: Deploy, at: datetime) -> None:
    """Its release went live on one more host `at` (each in turn): the last one's time is
    when it served on every host."""
    if deploy.all_live_at is None or at > deploy.all_live_at:
        Deploy.objects.filter(pk=deploy.pk).update(all_live_at=at)
        deploy.all_live_at = at


def live_everywhere_at(deploy: Deploy) -> datetime | None:
    """When the deploy's release served on every host it went to (the first host's switch
    for a deploy from before this was kept)."""
    return deploy.all_live_at or deploy.switched_at


def deploy_felt(deploy: Deploy, felt: Felt) -> None:
    """What users felt during the deploy's switch, as Caddy counted it."""
    measured = not felt.unmeasured
    deploy.switch_served = felt.served if measured else None
    deploy.switch_failed = felt.failed if measured else None
    deploy.switch_app_errors = felt.app_errors if measured else None
    deploy.switch_mixed = felt.mixed if measured else None
    deploy.drain_seconds = felt.drain_seconds
    deploy.felt_unmeasured = felt.unmeasured[:300]
    deploy.save(update_fields=[*FELT_FIELDS])


FELT_FIELDS = (
    "switch_served",
    "switch_failed",
    "switch_app_errors",
    "switch_mixed",
    "drain_seconds",
    "felt_unmeasured",
)


def deploy_ended(deploy: Deploy, state: str, reason: str, live_after: str) -> None:
    """The deploy's end, with what serves the domain now; written by onwatch itself. The
    reason is masked here, whoever built it: a host's or a switch's own words may quote
    the service's secrets (its environment)."""
    reason = Masker(deploy.service.secrets).mask(reason)
    with transaction.atomic():
        Deploy.objects.filter(pk=deploy.pk).update(
            state=state, reason=reason[:4000], live_after=live_after[:300], ended_at=timezone.now()
        )
        deploy.refresh_from_db()
        SYSTEM.record(
            f"{deploy.kind}-{state}",
            deploy.service.org,
            deploy.service.name,
            id=deploy.pk,
            release=deploy.release_id,
            reason=reason[:500],
            live=live_after,
        )


def queue_going_back(deploy: Deploy, why: str) -> tuple[Job, bool]:
    """The going-back job of a deploy whose worker died, and whether it is new: one a
    deploy, however often and from however many schedulers the reaper comes by (the
    deploy's row is locked while it looks; the one under way, or ended, is kept). Two
    attempts: a worker that dies during it leaves it to the next (the reaper queues it
    again)."""
    with transaction.atomic():
        Deploy.objects.select_for_update().filter(pk=deploy.pk).first()
        found = Job.objects.filter(kind=GOING_BACK_KIND, payload__deploy=deploy.pk).first()
        if found is not None:
            return found, False
        job = jobs.enqueue(
            GOING_BACK_KIND,
            {"deploy": deploy.pk, "why": why[:2000]},
            org=deploy.service.org,
            max_attempts=2,
        )
        return job, True


def deploy_went_back(deploy: Deploy, reason: str, live_after: str) -> None:
    """What the going-back job did, said on the interrupted deploy (its line and what
    serves now); masked as deploy_ended's."""
    reason = Masker(deploy.service.secrets).mask(reason)
    Deploy.objects.filter(pk=deploy.pk).update(reason=reason[:4000], live_after=live_after[:300])
    deploy.refresh_from_db()
    SYSTEM.record(
        f"{deploy.kind}-went-back",
        deploy.service.org,
        deploy.service.name,
        id=deploy.pk,
        reason=reason[:500],
        live=live_after,
    )


# --- the watch of a release after its deploy (watch.py) -------------------------------------


def deploy_channels(service: Service) -> list[alert_services.Channel] | None:
    """The channels the service's pipelines, deploys and watches alert; None: every one of
    the organization, also when each channel it chose was deleted since (an alert then
    reaches everyone rather than nobody)."""
    if service.all_channels:
        return None
    return list(service.channels.all()) or None


def set_watch(
    service: Service,
    seconds: int,
    min_requests: int,
    error_percent: float,
    error_factor: float,
    actor: Actor,
    *,
    latency_factor: float | None = None,
    latency_ms: int | None = None,
) -> None:
    """How long each new release is watched (0: not) and what is clearly worse; the
    latency rule stays as it is unless given."""
    latency_factor = service.watch_latency_factor if latency_factor is None else latency_factor
    latency_ms = service.watch_latency_ms if latency_ms is None else latency_ms
    if not 0 <= seconds <= 86400:
        raise Refusal("Watch a release between 0 (not at all) and 86400 seconds", "watch_seconds")
    if min_requests < 1:
        raise Refusal("At least 1 request must be answered to judge a release", "min_requests")
    # Not a number, or infinite (`--error-factor inf`): no share of errors could pass it.
    finite = math.isfinite(error_percent) and math.isfinite(error_factor)
    if not finite or not 0 <= error_percent < 100 or error_factor < 1:
        raise Refusal("The error share is a percentage below 100, the factor 1 or more", "errors")
    if not (latency_factor == 0 or 1 <= latency_factor <= 1000) or not 0 <= latency_ms <= 600000:
        raise Refusal(
            "The latency factor is 0 (latency does not count) or 1 to 1000, its floor 0 to "
            "600000 ms",
            "latency",
        )
    with transaction.atomic():
        service.watch_seconds, service.watch_min_requests = seconds, min_requests
        service.watch_error_percent, service.watch_error_factor = error_percent, error_factor
        service.watch_latency_factor, service.watch_latency_ms = latency_factor, latency_ms
        service.save(update_fields=[*WATCH_FIELDS])
        actor.record(
            "service-watch-set",
            service.org,
            service.name,
            id=service.pk,
            **{f: getattr(service, f) for f in WATCH_FIELDS},
        )


WATCH_FIELDS = (
    "watch_seconds",
    "watch_min_requests",
    "watch_error_percent",
    "watch_error_factor",
    "watch_latency_factor",
    "watch_latency_ms",
)


def watch_rule(service: Service) -> str:
    """The service's watch in one sentence."""
    if not service.watch_seconds:
        return "new releases are not watched: onwatch never rolls one back on its own"
    return (
        f"each new release is watched for {service.watch_seconds} s and rolled back when, "
        f"with at least {service.watch_min_requests} requests answered, more than "
        f"{service.watch_error_percent:g} % of them are errors (5xx) and over "
        f"{service.watch_error_factor:g} times the share of the release before it while it "
        f"served (the share alone when fewer than {service.watch_min_requests} of its answers "
        "were counted)" + latency_rule(service)
    )


def latency_rule(service: Service) -> str:
    if not service.watch_latency_factor:
        return "; how long they take does not count"
    return (
        f", or when they take over {service.watch_latency_ms} ms on average and over "
        f"{service.watch_latency_factor:g} times as long as the release before it's"
    )


@dataclass(frozen=True)
class Tally:
    """Answers of a release: how many, how many 5xx, the seconds they took together, and
    the seconds of its serving they were counted over (Release.tally_*)."""

    requests: int
    errors: int
    seconds: float
    span: float

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.requests + other.requests,
            self.errors + other.errors,
            self.seconds + other.seconds,
            self.span + other.span,
        )


def tally_of(release: Release) -> Tally | None:
    """What its row kept; None: it was never counted."""
    if release.tally_requests is None:
        return None
    errors, seconds = release.tally_errors or 0, release.tally_seconds or 0.0
    return Tally(release.tally_requests, errors, seconds, release.tally_span or 0.0)


def tallied(release_id: int, more: Tally) -> None:
    """Add answers to the release's tally, in the database: a watch that ends and a deploy
    that counted the release before its switch may add at once."""
    Release.objects.filter(pk=release_id).update(
        tally_requests=Coalesce("tally_requests", 0) + more.requests,
        tally_errors=Coalesce("tally_errors", 0) + more.errors,
        tally_seconds=Coalesce("tally_seconds", 0.0) + more.seconds,
        tally_span=Coalesce("tally_span", 0.0) + more.span,
    )


def kept_tally(release: Release) -> Tally | None:
    """What the release answered while it served: its tally, with what a watch of it still
    going counted (that joins the tally only once the watch ends). The row is locked first,
    so a watch that ends meanwhile is counted once: before it, or in it."""
    row = Release.objects.select_for_update().get(pk=release.pk)
    kept = tally_of(row)
    going = (WatchState.WATCHING, WatchState.ROLLING_BACK)
    for w in Watch.objects.filter(deploy__release=row, state__in=going).select_related("deploy"):
        counted = Tally(w.requests, w.errors, w.seconds, counted_span(w))
        kept = counted if kept is None else kept + counted
    return kept


def counted_span(watch: Watch) -> float:
    """The seconds of serving a watch's counts cover: from the switch to its last read of
    Caddy's log (what was logged after it, while a newer deploy built, was never read)."""
    since = watch.deploy.switched_at or watch.started_at
    read = ((watch.looked_at or since) - since).total_seconds()
    return max(0.0, read - watch.unread_seconds)


def watch_started(
    deploy: Deploy,
    previous: Release,
    upstream: str,
    before: Tally | None,
    hosts: list[dict[str, Any]] | None = None,
) -> Watch:
    """Watch the deploy's release from now on, against the release before it: what that
    one answered while it served (kept_tally) with `before`, what was counted of it from
    just before the switch until it on every host (None: nothing could be), which joins
    its tally. `hosts`: each host's count of a service on SSH hosts (Watch.hosts). The
    job looks again and again (watch.py)."""
    with transaction.atomic():
        kept = kept_tally(previous)
        base = kept + before if kept is not None and before is not None else kept or before
        watch = Watch.objects.create(
            deploy=deploy,
            previous=previous,
            until=timezone.now() + timedelta(seconds=deploy.service.watch_seconds),
            upstream=upstream,
            hosts=hosts or [],
            base_requests=base.requests if base else None,
            base_errors=base.errors if base else None,
            base_seconds=base.seconds if base else None,
            base_span=base.span if base else None,
            base_kept_requests=kept.requests if kept else None,
            base_kept_span=kept.span if kept else None,
        )
        if before is not None:
            tallied(previous.pk, before)
        jobs.enqueue(WATCH_KIND, {"watch": watch.pk}, org=deploy.service.org)
    return watch


def watch_counted(
    watch: Watch,
    requests: int,
    errors: int,
    seconds: float,
    offset: int,
    recent: list[list[float]] | None = None,
    hosts: list[dict[str, Any]] | None = None,
) -> None:
    watch.requests, watch.errors, watch.seconds, watch.offset = requests, errors, seconds, offset
    watch.recent = watch.recent if recent is None else recent
    watch.hosts = watch.hosts if hosts is None else hosts
    watch.looked_at = timezone.now()
    fields = ["requests", "errors", "seconds", "offset", "recent", "hosts", "looked_at"]
    watch.save(update_fields=fields)


def watch_rolling_back(watch: Watch, rollback: Deploy, verdict: str) -> None:
    watch.state, watch.rollback, watch.verdict = WatchState.ROLLING_BACK, rollback, verdict
    watch.detected_at = watch.detected_at or timezone.now()
    watch.save(update_fields=["state", "rollback", "verdict", "detected_at"])


def watch_ended(watch: Watch, state: str, verdict: str) -> None:
    """The watch's end, as the last step of its deploy's timeline too; what it counted
    joins its release's tally, the baseline of the release deployed after it."""
    now = timezone.now()
    bad = state in (WatchState.FAILING, WatchState.ROLLED_BACK, WatchState.ROLLING_BACK)
    if bad and watch.detected_at is None:
        watch.detected_at = now
    with transaction.atomic():
        first = Watch.objects.select_for_update().filter(pk=watch.pk, ended_at=None).exists()
        watch.state, watch.verdict, watch.ended_at = state, verdict[:4000], now
        watch.save(update_fields=["state", "verdict", "ended_at", "detected_at"])
        if first and watch.deploy.release_id is not None:
            counted = Tally(watch.requests, watch.errors, watch.seconds, counted_span(watch))
            tallied(watch.deploy.release_id, counted)
        watch_step(watch, verdict, ok=not bad, ended=now, judged=state not in UNJUDGED)
        SYSTEM.record(
            "watch-ended",
            watch.deploy.service.org,
            watch.deploy.service.name,
            id=watch.deploy_id,
            state=state,
            verdict=verdict[:500],
        )


# A watch that ended so is neither passed nor failed: its step looks neutral, not "ok".
UNJUDGED = (WatchState.NOT_JUDGED, WatchState.REPLACED)


def watch_step(
    watch: Watch,
    detail: str,
    ok: bool = True,
    ended: datetime | None = None,
    judged: bool = True,
) -> None:
    """The "watch" step of the deploy's timeline: what is watched, then the verdict."""
    took = (ended - watch.started_at).total_seconds() if ended else None
    step = {
        "name": "watch",
        "started": watch.started_at.isoformat(),
        "ended": ended.isoformat() if ended else None,
        "seconds": took,
        "ok": ok,
        "detail": detail,
    }
    deploy_step(watch.deploy, step if judged else step | {"result": NOT_JUDGED})


def deploy_not_watched(deploy: Deploy, why: str) -> None:
    """A "watch" step that judged nothing, saying why (Caddy could count on no host)."""
    now = timezone.now().isoformat()
    step = {"name": "watch", "started": now, "ended": now, "seconds": 0.0, "ok": True}
    deploy_step(deploy, step | {"detail": why, "result": NOT_JUDGED})


# A step's result as said everywhere (page, API, CLI): "ok", "failed", or "not judged".
NOT_JUDGED = "not judged"


def step_result(step: dict[str, Any], state: str) -> str:
    """ "running" for a step still going on (a watch outlasts its deploy): it said "ok".
    One left open by a deploy that ended (a worker died in it) is not going on."""
    if step.get("seconds") is None and not step.get("ended") and not step.get("result"):
        if step["name"] == "watch" or state not in DEPLOY_ENDED:
            return "running"
        return f"stopped (the deploy {'failed' if state == State.FAILED else f'was {state}'})"
    return str(step.get("result") or ("ok" if step["ok"] else "failed"))


def deploys_since(watch: Watch) -> list[Deploy]:
    """The deploys and rollbacks of the service that began after the watch's count did,
    whatever their number (an older deploy that waited for its pipeline starts later), its
    own rollback apart: each took Caddy's count over, and one that switched replaced what
    is watched. First those that switched."""
    deploy = watch.deploy
    since = watch.counting_since or deploy.started_at or watch.started_at
    found = Deploy.objects.filter(service_id=deploy.service_id, started_at__gt=since)
    found = found.exclude(pk__in=[deploy.pk, watch.rollback_id or 0])
    return sorted(found, key=lambda d: (d.switched_at is None, d.started_at))


def watch_counting_again(watch: Watch) -> None:
    """Caddy's count was started again by the watch: its log is read from its start. What
    was logged since its last read (while a newer deploy built) was never read."""
    now, since = timezone.now(), watch.deploy.switched_at or watch.started_at
    watch.unread_seconds += max(0.0, (now - (watch.looked_at or since)).total_seconds())
    watch.counting_since, watch.offset, watch.looked_at = now, 0, now
    watch.hosts = [h | {"offset": 0} for h in watch.hosts]  # each host's count began again
    fields = ["counting_since", "offset", "hosts", "looked_at", "unread_seconds"]
    watch.save(update_fields=fields)


# --- what the errors app reads: which releases went live, in order --------------------------


def service_choices(org: Organization) -> list[tuple[int, str]]:
    """(id, name) of the organization's services, for linking an error project to one."""
    return list(Service.objects.filter(org=org).values_list("id", "name"))


def channels_hearing(service_id: int) -> list[alert_services.Channel]:
    """Who hears about the service: the channels it chose, or every channel of its
    organization (an error project linked to it alerts the same people)."""
    service = Service.objects.get(pk=service_id)
    chosen = deploy_channels(service)
    return alert_services.organization_channels(service.org) if chosen is None else chosen


def deployed_commits(service_id: int) -> list[str]:
    """The commits the service's deploys made live, in the order each first went live (a
    rollback makes an older one live again, but does not make it newer)."""
    return list(first_live(service_id))


def went_live() -> Coalesce:
    """When a deploy's release went live: its switch, or for a deploy from before onwatch
    kept that moment, its end."""
    return Coalesce("switched_at", "ended_at")


def first_live(service_id: int) -> dict[str, datetime | None]:
    """When each commit the service's deploys made live first went live (its switch), in
    that order. A deploy still draining the old release, or cut short after its switch,
    made its release live all the same."""
    switched = Q(switched_at__isnull=False) | Q(state=State.SUCCEEDED)
    rows = (
        Deploy.objects.filter(
            switched,
            service_id=service_id,
            kind=DeployKind.DEPLOY,
            release__isnull=False,
        )
        .annotate(went=went_live())
        .order_by("went", "id")
        .values_list("release__commit", "went")
    )
    found: dict[str, datetime | None] = {}
    for commit, ended in rows:
        if commit:
            found.setdefault(commit, ended)
    return found


# --- onwatch itself behind this machine's Caddy ----------------------------------------------


class OwnDomainError(Exception):
    """onwatch could not be put behind Caddy; the message says why and what to do."""


def serve_onwatch_at(domain: str, host: str, port: int, token: str) -> list[str]:
    """`onwatch up --domain`: Caddy (started when it is not running) sends `domain` to
    onwatch on its loopback `host:port` over HTTPS, beside the services' sites; the lines
    say how the certificate comes and, for a local name, which root a browser must trust.
    A change of domain is written to the audit log."""
    from onwatch.core import audit
    from onwatch.deploys import switch

    here = switch.this_machine()
    if not here.options.https:
        # Said before anything starts: a refusal leaves nothing running.
        raise OwnDomainError("onwatch's domain needs HTTPS: unset ONWATCH_CADDY_HTTPS=false")
    dial = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    own = caddy.Own(domain, dial, token)
    supervisor_was_up, caddy_was_up = here.supervisor.answers(), here.caddy.answers()
    try:
        before = here.caddy.own()
        here.ensure_running()
        here.caddy.put_own(own)
    except (caddy.CaddyError, procman.ProcmanError) as e:
        left = _stop_what_was_started(here, supervisor_was_up, caddy_was_up)
        raise OwnDomainError(str(e) + left) from None
    if before is None or before.domain != domain:
        audit.record("onwatch-domain-set", actor=audit.CLI, target=domain)
    return _own_lines(own, here.caddy, here.options.https_port)


def _stop_what_was_started(here: Machine, supervisor_was_up: bool, caddy_was_up: bool) -> str:
    """A refused domain leaves the machine as it found it ("nothing was changed" holds for
    processes too); "" when it does, else what is left running."""
    try:
        if not supervisor_was_up and here.supervisor.answers():
            here.supervisor.shutdown()
        elif not caddy_was_up and here.supervisor.has(caddy.PROGRAM):
            here.supervisor.stop(caddy.PROGRAM)
    except procman.ProcmanError as e:
        return f" (but Caddy may still run: {e})"
    return ""


def _own_lines(own: caddy.Own, proxy: caddy.Caddy, https_port: int) -> list[str]:
    port = "" if https_port == 443 else f":{https_port}"
    if not own.local:
        return [
            f"onwatch: Caddy serves https://{own.domain}{port} with a certificate from Let's "
            f"Encrypt (the name must point at this machine, ports 80 and 443 open)"
        ]
    root = proxy.root_certificate
    return [
        f"onwatch: Caddy serves https://{own.domain}{port} with a certificate of its own "
        f"local authority (tls internal); to make browsers trust it, import {root}"
    ]


def stop_serving_onwatch() -> None:
    """Without --domain onwatch takes its earlier domain off Caddy, if it had one (so
    nothing answers there for an onwatch that no longer expects it)."""
    from onwatch.core import audit
    from onwatch.deploys import switch

    here = switch.this_machine()
    try:
        before = here.caddy.own()
        if before is None:
            return
        here.caddy.put_own(None)  # when Caddy is down, it starts from the file without it
    except caddy.CaddyError as e:
        raise OwnDomainError(str(e)) from None
    audit.record("onwatch-domain-removed", actor=audit.CLI, target=before.domain)
