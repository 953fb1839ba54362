"""Services and their pipelines: the one place that creates and changes them, with the
audit entry. The pages, the API and the CLI parse what they are given and call these.

Secret values go in and never come out again here: audit entries name secrets, never
their values, and nothing but a pipeline's steps reads them.
"""

from __future__ import annotations

import os
import re
import secrets as tokens
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field

from onwatch.core import jobs, ssh
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.masking import Masker
from onwatch.core.models import Organization
from onwatch.core.rest import Text
from onwatch.deploys import git, junit
from onwatch.deploys.models import Pipeline, Service, State, Trigger, WebhookDelivery

KIND = "deploys.pipeline"
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
    for name, value in (secrets or {}).items():
        check_secret(name, value)
    pair = ssh.new_key_pair(f"onwatch deploy key for {fields.name}")
    values: dict[str, Any] = {**fields.model_dump(), "secrets": dict(secrets or {})}
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
            actor.record(
                "service-added",
                org,
                service.name,
                id=service.pk,
                git_url=service.git_url,
                branch=service.branch,
                secrets=service.secret_names,
            )
    except IntegrityError:
        raise Refusal(f"Another service is already called {fields.name!r}", "name") from None
    return service


def change_service(service: Service, fields: ServiceFields, actor: Actor) -> list[str]:
    check(service.org, fields, service)
    changed = [k for k, v in fields.model_dump().items() if getattr(service, k) != v]
    if not changed:
        return []
    moved = "git_url" in changed and git.ssh_endpoint(service.git_url) != git.ssh_endpoint(
        fields.git_url
    )
    for name, value in fields.model_dump().items():
        setattr(service, name, value)
    if moved:
        # Another server: its host key is pinned anew on first use.
        service.known_hosts = ""
        changed.append("known_hosts")
    with transaction.atomic():
        service.save()
        actor.record("service-changed", service.org, service.name, id=service.pk, changed=changed)
    return changed


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
class Evidence:
    """What the readiness board shows of a service: when its tests last passed on its own
    branch, how long its pipeline takes and how often it fails (of its last runs)."""

    last_passed: datetime | None
    median_seconds: float | None
    failed: int
    counted: int


EVIDENCE_RUNS = 20


def evidence(service: Service) -> Evidence:
    ended = list(
        Pipeline.objects.filter(service=service, branch=service.branch)
        .filter(state__in=[State.SUCCEEDED, State.FAILED, State.INTERRUPTED])
        .order_by("-pk")[:EVIDENCE_RUNS]
    )
    passed = [p for p in ended if p.state == State.SUCCEEDED]
    took = [p.seconds for p in passed if p.seconds is not None]
    return Evidence(
        last_passed=passed[0].ended_at if passed else None,
        median_seconds=median(took) if took else None,
        failed=len(ended) - len(passed),
        counted=len(ended),
    )


@dataclass(frozen=True)
class Push:
    """What a trigger knows of the commit to test; author and message are a hint until
    the checkout records the commit's own."""

    commit: str = ""
    author: str = ""
    message: str = ""
    # The branch pushed (a `git push` may push any); the service's own when empty.
    branch: str = ""


def run_pipeline(service: Service, actor: Actor, trigger: str, push: Push = Push()) -> Pipeline:
    """Queue a pipeline of the service's branch now (of `push.commit` when given, else the
    branch's newest); a worker runs it in the pipelines queue, where it never waits behind
    a backup. It supersedes older ones of the branch unless the service says not to."""
    # Masked before they are kept (and before they are cut, so no part of a secret stays):
    # a webhook says what it likes, and a pipeline that never checks out shows them as sent.
    mask = Masker(service.secrets).mask
    with transaction.atomic():
        pipeline = Pipeline.objects.create(
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
