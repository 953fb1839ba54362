"""Services and pipelines in the JSON API: list, read and add services, run a pipeline
now, read a pipeline with its steps; a service's domain, deploys, rollbacks and releases.
Only parses: services.py decides and writes.
Secret values go in (on create) and never come out: answers name secrets only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import ConfigDict, Field

from onwatch.core.audit import Actor
from onwatch.core.masking import Masker
from onwatch.core.rest import ERRORS, not_found, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.core.validators import MAX_ID, Text
from onwatch.deploys import releases
from onwatch.deploys import services as writer
from onwatch.deploys.models import Deploy, Pipeline, Release, Service
from onwatch.deploys.services import Refusal, ServiceFields

services = Router()
LISTING = "/api/v1/services/"


class WatchIn(Schema):
    model_config = ConfigDict(extra="forbid")

    seconds: int = Field(description="How long each new release is watched; 0: not at all")
    min_requests: int = Field(description="Requests it must answer before it is judged")
    error_percent: float = Field(description="Its share of errors (5xx) must exceed this")
    error_factor: float = Field(description="and this many times the release before it's")
    latency_factor: float = Field(
        description="Or its mean latency this many times the release before it's (0: latency "
        "does not count)"
    )
    latency_ms: int = Field(description="and over this many milliseconds")


class WatchOut(WatchIn):
    rule: str = Field(description="The same, in one sentence")


class ServiceOut(Schema):
    id: int
    name: str
    git_url: str
    branch: str
    deploy_public_key: str = Field(description="Add it to the repository's deploy keys")
    secret_names: list[str] = Field(description="Names only: values are never shown")
    supersede: bool = Field(description="A newer pipeline of the branch cancels the older one")
    poll_minutes: int | None = Field(description="Checks for new commits this often; null: never")
    alert_channels: list[int] | None = Field(
        description="Channels that hear about its pipelines (and whoever pushed); null: every one"
    )
    domain: str = Field(description="Where it answers through onwatch's Caddy; empty: nowhere")
    auto_deploy: bool = Field(description="Each green pipeline of its branch deploys by itself")
    backup_plan_id: int | None = Field(
        description="The backup plan backed up before a release's migrations; null: none"
    )
    watch: WatchOut = Field(
        description="When onwatch rolls a new release back on its own (PUT .../watch/)"
    )


class RateOut(Schema):
    failed: int
    counted: int = Field(description="Ended pipelines counted (cancelled ones are not)")
    percent: float | None = Field(description="null: too few pipelines for a rate")
    text: str


class EvidenceOut(Schema):
    last_passed: datetime | None = Field(description="When its tests last passed on its branch")
    median_seconds: float | None = Field(
        description="Median duration of the last 10 green pipelines; null: too few yet"
    )
    previous_median_seconds: float | None = Field(description="Of the 10 green ones before")
    change_percent: float | None = Field(description="Slower (+) or faster (-) than before")
    duration_text: str
    last_30_pipelines: RateOut
    last_30_days: RateOut


class ServiceDetailOut(ServiceOut):
    evidence: EvidenceOut = Field(description="What the readiness board shows of it")


class ServiceList(Schema):
    services: list[ServiceOut]


class ServiceIn(ServiceFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "shop", "git_url": "git@github.com:acme/shop.git"}]
        }
    )

    secrets: dict[Text, Text] = Field(
        default_factory=dict, description="name -> value, given to the steps as environment"
    )


class StepOut(Schema):
    position: int
    name: str
    command: str
    state: str
    exit_code: int | None
    reason: str
    started_at: datetime | None
    ended_at: datetime | None
    seconds: float | None


class FailingTestOut(Schema):
    name: str
    classname: str
    message: str = Field(description="The first line of its failure, secrets masked")


class PipelineOut(Schema):
    id: int
    service_id: int
    branch: str
    commit: str
    author: str
    message: str
    trigger: str
    pushed_by: str = Field(
        description="Who pushed or ran it: a member's name and e-mail, or an e-mail that is "
        "no member's, followed by '(not a member)'; empty when not known"
    )
    state: str
    reason: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    job_id: int | None
    tests_total: int | None = Field(description="From the test step's JUnit report; null: none")
    tests_failed: int
    tests_errors: int
    tests_skipped: int
    failing_tests: list[FailingTestOut]
    steps: list[StepOut]


def service_out(s: Service) -> dict[str, Any]:
    apart = ("alert_channels", "watch")
    shown = {name: getattr(s, name) for name in ServiceOut.model_fields if name not in apart}
    return shown | {"alert_channels": writer.channels_chosen(s), "watch": watch_out(s)}


def watch_out(s: Service) -> dict[str, Any]:
    rule = {name: getattr(s, f"watch_{name}") for name in WatchIn.model_fields}
    return rule | {"rule": writer.watch_rule(s)}


def rate_out(rate: writer.Rate) -> dict[str, Any]:
    return {
        "failed": rate.failed,
        "counted": rate.counted,
        "percent": rate.percent,
        "text": rate.text,
    }


def evidence_out(e: writer.Evidence) -> dict[str, Any]:
    return {
        "last_passed": e.last_passed,
        "median_seconds": e.median_seconds,
        "previous_median_seconds": e.previous_median_seconds,
        "change_percent": e.change_percent,
        "duration_text": e.duration_text,
        "last_30_pipelines": rate_out(e.recent),
        "last_30_days": rate_out(e.month),
    }


def pipeline_out(p: Pipeline) -> dict[str, Any]:
    # Stored masked already; masked again as it leaves, with the secrets as they are now.
    masker = Masker(p.service.secrets)

    def masked(value: object) -> object:
        return masker.mask(value) if isinstance(value, str) else value

    shown = {name: masked(getattr(p, name)) for name in PipelineOut.model_fields}
    steps = [{n: masked(getattr(s, n)) for n in StepOut.model_fields} for s in p.steps.all()]
    return shown | {"steps": steps}


def find(request: HttpRequest, pk: int) -> Service:
    found = Service.objects.filter(org=org_of(request), pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise not_found("service", pk, LISTING)
    return found


@operation(services, "GET", "", "services:read", response={200: ServiceList, **ERRORS})
def service_list(request: HttpRequest) -> dict[str, Any]:
    """The organization's services by name."""
    return {"services": [service_out(s) for s in Service.objects.filter(org=org_of(request))]}


@operation(services, "POST", "", "services:write", response={201: ServiceOut, **ERRORS})
def service_create(request: HttpRequest, body: ServiceIn) -> Status[dict[str, Any]]:
    """Add a service; onwatch makes its deploy key (the answer shows the public half)."""
    fields = ServiceFields(**body.model_dump(exclude={"secrets"}))
    try:
        made = writer.add_service(org_of(request), fields, Actor.of(request), body.secrets)
    except Refusal as e:
        raise refuse(str(e)) from None
    return Status(201, service_out(made))


@operation(
    services, "GET", "{service_id}/", "services:read", response={200: ServiceDetailOut, **ERRORS}
)
def service_get(request: HttpRequest, service_id: int) -> dict[str, Any]:
    """A service with its evidence: when its tests last passed, how long its pipeline
    takes against before, and how often it fails (the same figures as its page)."""
    service = find(request, service_id)
    return service_out(service) | {"evidence": evidence_out(writer.evidence(service))}


class DeletedOut(Schema):
    pipelines: int = Field(description="Its pipelines, removed with it")
    cancelled: list[int] = Field(description="Those that were still queued or running")


@operation(
    services, "DELETE", "{service_id}/", "services:write", response={200: DeletedOut, **ERRORS}
)
def service_delete(request: HttpRequest, service_id: int, confirm: str = "") -> dict[str, Any]:
    """Delete the service with its pipelines, logs, secrets and caches; its running
    pipelines are stopped. `confirm` must be the service's name."""
    try:
        gone = writer.delete_service(find(request, service_id), confirm, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return {"pipelines": gone.pipelines, "cancelled": gone.cancelled}


class SecretIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=100)
    value: Text = Field(description="Stored encrypted; never answered again")


@operation(
    services,
    "POST",
    "{service_id}/secrets/",
    "services:write",
    response={200: ServiceOut, **ERRORS},
)
def service_secret_set(request: HttpRequest, service_id: int, body: SecretIn) -> dict[str, Any]:
    """Add a secret, or replace the value of one of that name."""
    service = find(request, service_id)
    try:
        writer.set_secret(service, body.name, body.value, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return service_out(service)


@operation(
    services, "POST", "{service_id}/run/", "pipelines:run", response={202: PipelineOut, **ERRORS}
)
def service_run(request: HttpRequest, service_id: int) -> Status[dict[str, Any]]:
    """Queue a pipeline of the service's branch now; follow it at pipelines/{id}/."""
    pipeline = writer.run_pipeline(find(request, service_id), Actor.of(request), "api")
    return Status(202, pipeline_out(pipeline))


@operation(
    services,
    "GET",
    "pipelines/{pipeline_id}/",
    "services:read",
    response={200: PipelineOut, **ERRORS},
)
def pipeline_get(request: HttpRequest, pipeline_id: int) -> dict[str, Any]:
    """A pipeline with its steps: states, exit codes, reasons and durations."""
    found = None
    if pipeline_id <= MAX_ID:
        found = Pipeline.objects.filter(service__org=org_of(request), pk=pipeline_id).first()
    if found is None:
        raise not_found("pipeline", pipeline_id, LISTING)
    return pipeline_out(found)


# --- domains, deploys, rollbacks, releases -------------------------------------------------


class DomainIn(Schema):
    model_config = ConfigDict(extra="forbid")

    domain: Text = Field(max_length=253, description="e.g. shop.example.com; empty takes it off")
    auto_deploy: bool = Field(default=True, description="Deploy each green pipeline by itself")


class DeployIn(Schema):
    model_config = ConfigDict(extra="forbid")

    commit: Text = Field(default="", max_length=64, description="Empty: the branch's newest")
    skip_backup: bool = Field(
        default=False,
        description="On purpose, without the backup before migrations of the service's plan "
        "(audited)",
    )


class BackupPlanIn(Schema):
    model_config = ConfigDict(extra="forbid")

    plan_id: int | None = Field(ge=1, le=MAX_ID, description="null: no backup before migrations")


class RollbackIn(Schema):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(default=None, ge=1, le=MAX_ID, description="null: the previous one")


class NoRollbackIn(Schema):
    model_config = ConfigDict(extra="forbid")

    why: Text = Field(default="", max_length=500, description="What its release changed")
    on: bool = Field(default=True, description="false takes the mark off")


class DeployStepOut(Schema):
    name: str
    started: datetime
    ended: datetime | None
    seconds: float | None
    ok: bool = Field(description="False when it failed")
    result: str = Field(
        description='"ok", "failed", or "not judged" (a watch that could say neither: too '
        "little traffic, or it ended early; ok is true then)"
    )
    detail: str = Field(description="What it did, or why it failed, in one line")
    live_at: datetime | None = Field(
        default=None, description="A switch step's: when its release went live on that host"
    )


class DeployOut(Schema):
    id: int
    service_id: int
    kind: str = Field(description="deploy or rollback")
    release_id: int | None
    pipeline_id: int | None = Field(description="The pipeline it waits for (automatic)")
    commit: str
    trigger: str
    skip_backup: bool = Field(description="Asked to go without the backup before migrations")
    state: str
    reason: str
    live_after: str = Field(description="What serves the domain once it ended")
    created_at: datetime
    started_at: datetime | None
    switched_at: datetime | None = Field(
        description="When its release went live (Caddy could send it requests); null when "
        "its switch did not happen, or for a deploy from before onwatch kept it"
    )
    all_live_at: datetime | None = Field(
        description="On several hosts, switched in turn: when its release went live on the "
        "last one switched (switched_at is the first's); null as switched_at, or for a "
        "deploy from before onwatch kept it"
    )
    ended_at: datetime | None
    job_id: int | None
    steps: list[DeployStepOut] = Field(description="Its timeline")
    # What users felt during its switch, as Caddy counted it: the same figures as its page.
    switch_served: int | None = Field(
        description="Requests answered from when its release could take requests until the "
        "old one stopped; null when not counted (felt_unmeasured says why) or no switch"
    )
    switch_failed: int | None = Field(
        description="Of them, those no release answered (Caddy answered 502, 503 or 504)"
    )
    switch_app_errors: int | None = Field(description="Of them, 5xx answers the app itself sent")
    switch_mixed: int | None = Field(
        description="Requests the old release took after the new one had taken over"
    )
    drain_seconds: float | None = Field(
        description="How long the old release took to finish its running requests; null when "
        "nothing served before or it could not be stopped"
    )
    felt_unmeasured: str = Field(description="Why the requests could not be counted, if so")
    felt_text: str = Field(
        description="The same in one sentence, e.g. '0 failed requests during the switch, "
        "of 1,204 served; drained in 4.2 s'; empty when no switch happened"
    )


class ReleaseOut(Schema):
    id: int
    commit: str
    state: str
    reason: str
    created_at: datetime
    live: bool
    no_rollback_past: bool
    no_rollback_why: str
    backup_snapshot: str = Field(
        description="The snapshot backed up just before its release command; empty: none"
    )
    backed_up_at: datetime | None


class ReleaseList(Schema):
    releases: list[ReleaseOut]


def deploy_out(d: Deploy) -> dict[str, Any]:
    shown = {name: getattr(d, name) for name in DeployOut.model_fields}
    steps = [s | {"result": writer.step_result(s, d.state)} for s in d.steps]
    return shown | {"steps": steps}


def release_out(r: Release, live: Release | None) -> dict[str, Any]:
    shown = {name: getattr(r, name) for name in ReleaseOut.model_fields if name != "live"}
    return shown | {"live": r == live}


@operation(
    services, "PUT", "{service_id}/domain/", "services:write", response={200: ServiceOut, **ERRORS}
)
def service_domain_set(request: HttpRequest, service_id: int, body: DomainIn) -> dict[str, Any]:
    """Where the service answers, and whether green pipelines deploy by themselves."""
    service = find(request, service_id)
    try:
        writer.set_domain(service, body.domain, body.auto_deploy, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return service_out(service)


@operation(
    services,
    "PUT",
    "{service_id}/backup-plan/",
    "services:write",
    response={200: ServiceOut, **ERRORS},
)
def service_backup_plan_set(
    request: HttpRequest, service_id: int, body: BackupPlanIn
) -> dict[str, Any]:
    """The backup plan a deploy backs up before a release's migrations (null: none)."""
    service = find(request, service_id)
    try:
        writer.set_backup_plan(service, body.plan_id, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return service_out(service)


@operation(
    services, "PUT", "{service_id}/watch/", "services:write", response={200: ServiceOut, **ERRORS}
)
def service_watch_set(request: HttpRequest, service_id: int, body: WatchIn) -> dict[str, Any]:
    """How long each new release is watched, and what makes onwatch roll it back."""
    service = find(request, service_id)
    try:
        writer.set_watch(
            service,
            body.seconds,
            body.min_requests,
            body.error_percent,
            body.error_factor,
            Actor.of(request),
            latency_factor=body.latency_factor,
            latency_ms=body.latency_ms,
        )
    except Refusal as e:
        raise refuse(str(e)) from None
    return service_out(service)


@operation(
    services, "POST", "{service_id}/deploy/", "deploys:run", response={202: DeployOut, **ERRORS}
)
def service_deploy(request: HttpRequest, service_id: int, body: DeployIn) -> Status[dict[str, Any]]:
    """Build a commit and make it live; follow it at deploys/{id}/."""
    try:
        deploy = writer.queue_deploy(
            find(request, service_id),
            Actor.of(request),
            "api",
            body.commit,
            skip_backup=body.skip_backup,
        )
    except Refusal as e:
        raise refuse(str(e)) from None
    return Status(202, deploy_out(deploy))


@operation(
    services, "POST", "{service_id}/rollback/", "deploys:run", response={202: DeployOut, **ERRORS}
)
def service_rollback(
    request: HttpRequest, service_id: int, body: RollbackIn
) -> Status[dict[str, Any]]:
    """Make the previous (or a chosen kept) release live again, without a rebuild."""
    try:
        deploy = writer.queue_rollback(find(request, service_id), Actor.of(request), "api", body.to)
    except Refusal as e:
        raise refuse(str(e)) from None
    return Status(202, deploy_out(deploy))


@operation(
    services,
    "GET",
    "{service_id}/releases/",
    "services:read",
    response={200: ReleaseList, **ERRORS},
)
def service_releases(request: HttpRequest, service_id: int) -> dict[str, Any]:
    """The service's releases, newest first, and which one is live."""
    service = find(request, service_id)
    live = writer.live_release(service)
    return {"releases": [release_out(r, live) for r in service.releases.order_by("-pk")]}


@operation(
    services,
    "POST",
    "releases/{release_id}/no-rollback/",
    "deploys:run",
    response={200: ReleaseOut, **ERRORS},
)
def release_no_rollback(
    request: HttpRequest, release_id: int, body: NoRollbackIn
) -> dict[str, Any]:
    """Mark a release "no rollback past this" (its release command changed data for good)."""
    found = None
    if release_id <= MAX_ID:
        found = Release.objects.filter(service__org=org_of(request), pk=release_id).first()
    if found is None:
        raise not_found("release", release_id, LISTING)
    try:
        writer.mark_no_rollback_past(found, body.why, Actor.of(request), body.on)
    except Refusal as e:
        raise refuse(str(e)) from None
    return release_out(found, writer.live_release(found.service))


@operation(
    services, "GET", "deploys/{deploy_id}/", "services:read", response={200: DeployOut, **ERRORS}
)
def deploy_get(request: HttpRequest, deploy_id: int) -> dict[str, Any]:
    """A deploy or rollback with its timeline and what serves the domain now."""
    found = None
    if deploy_id <= MAX_ID:
        found = Deploy.objects.filter(service__org=org_of(request), pk=deploy_id).first()
    if found is None:
        raise not_found("deploy", deploy_id, LISTING)
    return deploy_out(found)


class HostsIn(Schema):
    model_config = ConfigDict(extra="forbid")

    hosts: list[Text] = Field(
        description="Host names in deploy order (as onwatch hosts lists them); [] or "
        '["this machine"]: this machine only',
        max_length=50,
    )


class WhereOut(Schema):
    host: str
    serving: str = Field(description="What serves the service there: a release, or nothing")
    seen_at: datetime | None = Field(description="When that was read (null: just now)")


class HostsOut(Schema):
    hosts: list[WhereOut] = Field(description="In the order its deploys go through them")
    not_stopped: list[str] = Field(
        default=[],
        description="Hosts taken off where the service could not be stopped (it may still "
        "serve there), one line each",
    )


def hosts_out(service: Service) -> dict[str, Any]:
    return {"hosts": [vars(w) for w in releases.where_it_runs(service)]}


@operation(
    services, "GET", "{service_id}/hosts/", "services:read", response={200: HostsOut, **ERRORS}
)
def service_hosts(request: HttpRequest, service_id: int) -> dict[str, Any]:
    """The hosts the service runs on, in deploy order, and what serves on each."""
    return hosts_out(find(request, service_id))


@operation(
    services, "PUT", "{service_id}/hosts/", "services:write", response={200: HostsOut, **ERRORS}
)
def service_hosts_set(request: HttpRequest, service_id: int, body: HostsIn) -> dict[str, Any]:
    """Set the hosts the service runs on; its next deploy goes to each in turn, all or
    nothing. Each must be a host of the organization that passed its check."""
    service = find(request, service_id)
    try:
        chosen = writer.hosts_named(service.org, list(body.hosts))
        left = writer.set_service_hosts(service, chosen, Actor.of(request), look=True)
    except Refusal as e:
        raise refuse(str(e)) from None
    return hosts_out(service) | {"not_stopped": left}
