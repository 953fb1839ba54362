"""The pipeline job, and what a pipeline says when its job is cancelled before it started
or its worker died while it ran."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from onwatch.core import jobs
from onwatch.core.jobs import (
    JobCancelled,
    JobContext,
    JobFailed,
    WaitLater,
    handler,
    when_cancelled,
    when_interrupted,
)
from onwatch.core.models import Job, JobState
from onwatch.deploys import (
    hostchecks,
    hosts,
    pipelines,
    polling,
    releases,
    services,
    watch,
    workdir,
)
from onwatch.deploys.models import (
    Deploy,
    Host,
    Pipeline,
    PipelineStep,
    Service,
    State,
    Watch,
    WatchState,
)
from onwatch.deploys.services import (
    DEPLOY_KIND,
    GOING_BACK_KIND,
    HOST_CHECK_KIND,
    KIND,
    WATCH_KIND,
)

UNDER_WAY = (State.QUEUED, State.RUNNING)


def of_pipeline(job: Job) -> str:
    found = Pipeline.objects.select_related("service").filter(pk=job.payload.get("pipeline"))
    pipeline = found.first()
    return pipelines.describe(pipeline) if pipeline else "A pipeline"


# Quiet: a pipeline raises its own alert (the failing step, its last lines, a link to the
# pipeline's page) for a failure or an interruption, so the job's own would say it twice.
@handler(KIND, queue="pipelines", quiet=True, describe=of_pipeline)
def run_pipeline(ctx: JobContext) -> dict[str, Any]:
    found = Pipeline.objects.select_related("service", "service__org")
    pipeline = found.filter(pk=ctx.job.payload.get("pipeline")).first()
    if pipeline is None:
        raise JobFailed("the pipeline or its service was removed; nothing to do")
    return pipelines.execute(ctx, pipeline)


def of_poll(job: Job) -> str:
    service = Service.objects.filter(pk=job.payload.get("service")).first()
    return f"Checking {service.name if service else 'a service'} for new commits"


@handler(polling.KIND, queue="short", describe=of_poll)
def poll_service(ctx: JobContext) -> dict[str, Any]:
    """One service's poll, queued by the scheduler's tick when it was due (at "due")."""
    found = Service.objects.select_related("org").filter(pk=ctx.job.payload.get("service"))
    service = found.first()
    if service is None:
        return {"pipeline": None, "note": "the service was removed; nothing to check"}
    pipeline = polling.poll(service, datetime.fromisoformat(ctx.job.payload["due"]))
    return {"pipeline": pipeline.pk if pipeline else None}


def of_host_check(job: Job) -> str:
    host = Host.objects.filter(pk=job.payload.get("host")).first()
    doing = "Preparing" if job.payload.get("prepare") else "Checking"
    return f"{doing} host {host.name if host else '(removed)'}"


# Quiet: the check alerts itself, once, when a host stops being ready.
@handler(HOST_CHECK_KIND, queue="short", quiet=True, describe=of_host_check)
def check_host(ctx: JobContext) -> dict[str, Any]:
    host = Host.objects.select_related("org").filter(pk=ctx.job.payload.get("host")).first()
    if host is None:
        return {"note": "the host was removed; nothing to check"}
    try:
        found = hostchecks.check(host, prepare=bool(ctx.job.payload.get("prepare")))
    except hosts.HostError as e:
        raise JobFailed(str(e)) from None
    for f in found:
        ctx.log(("ok: " if f.ok else "missing: ") + f.line)
    return {"ready": all(f.ok for f in found)}


def stop_rows(job: Job, state: str, reason: str, keep_reason: bool = False) -> list[Pipeline]:
    """Pipelines (and their steps) of `job` still under way end in `state`; with
    `keep_reason`, a reason a pipeline already has (superseded by …) stays."""
    now = timezone.now()
    stopped = list(Pipeline.objects.filter(job=job, state__in=UNDER_WAY).select_related("service"))
    for pipeline in stopped:
        PipelineStep.objects.filter(pipeline=pipeline, state=State.RUNNING).update(
            state=state, reason=reason, ended_at=now
        )
        said = (keep_reason and pipeline.reason) or reason
        Pipeline.objects.filter(pk=pipeline.pk).update(state=state, reason=said, ended_at=now)
        pipeline.refresh_from_db()
    return stopped


def cancelled(job: Job) -> None:
    stop_rows(job, State.CANCELLED, job.error or "cancelled", keep_reason=True)


def interrupted(job: Job) -> None:
    """Its worker died: the pipeline says so and alerts (the job is quiet), and the
    workspace the dead worker could not remove is removed here."""
    reason = "onwatch stopped while the pipeline ran (its worker stopped answering); run it again"
    for pipeline in stop_rows(job, State.INTERRUPTED, reason):
        workdir.remove_workspace(workdir.workspace_of(pipeline))
        pipelines.alert_failed(pipeline, verb="was interrupted")


when_cancelled(KIND, cancelled)
when_interrupted(KIND, interrupted)


def of_deploy(job: Job) -> str:
    deploy = Deploy.objects.select_related("service").filter(pk=job.payload.get("deploy")).first()
    if deploy is None:
        return "A deploy"
    return f"{deploy.kind.capitalize()} #{deploy.pk} of {deploy.service.name}"


# Builds run in the sandbox as pipelines do, so deploys share their queue: never behind a
# backup. Quiet: a deploy alerts by itself, with what serves now and what to do.
@handler(DEPLOY_KIND, queue="pipelines", quiet=True, describe=of_deploy)
def run_deploy(ctx: JobContext) -> dict[str, Any]:
    found = Deploy.objects.select_related("service", "service__org", "pipeline", "release")
    deploy = found.filter(pk=ctx.job.payload.get("deploy")).first()
    if deploy is None:
        raise JobFailed("the deploy or its service was removed; nothing to do")
    return releases.execute(ctx, deploy)


def deploy_cancelled(job: Job) -> None:
    """Cancelled before it ran: by a person, or because the pipeline it waited for did not
    pass (which alerts by itself)."""
    for deploy in Deploy.objects.filter(job=job, state__in=UNDER_WAY).select_related("pipeline"):
        pipeline = deploy.pipeline
        why = (
            f"pipeline #{pipeline.pk} did not pass ({pipeline.state}), so nothing was deployed"
            if pipeline is not None and pipeline.state != State.SUCCEEDED
            else job.error or "cancelled"
        )
        services.deploy_ended(deploy, State.CANCELLED, why, releases.serving(deploy.service))


def deploy_interrupted(job: Job) -> None:
    """Its worker died mid-deploy: the release that served keeps serving (the switch moves
    traffic only to a healthy release, and stops the old one last)."""
    for deploy in Deploy.objects.filter(job=job, state__in=UNDER_WAY).select_related("service"):
        releases.interrupted(deploy)


when_cancelled(DEPLOY_KIND, deploy_cancelled)
when_interrupted(DEPLOY_KIND, deploy_interrupted)


def of_going_back(job: Job) -> str:
    return f"Going back on the hosts of deploy #{job.payload.get('deploy')}"


def going_back_deploy(job: Job) -> Deploy | None:
    found = Deploy.objects.select_related("service", "service__org", "release", "job")
    return found.filter(pk=job.payload.get("deploy")).first()


# On the deploys' queue, as the deploy it finishes. Quiet: the deploy alerts by itself,
# with what the going back did and what serves now.
@handler(GOING_BACK_KIND, queue="pipelines", quiet=True, describe=of_going_back)
def go_back(ctx: JobContext) -> dict[str, Any]:
    deploy = going_back_deploy(ctx.job)
    if deploy is None:
        return {"note": "the deploy or its service was removed; nothing to do"}
    why = str(ctx.job.payload.get("why", ""))
    try:
        return releases.go_back(ctx, deploy, why)
    except (JobCancelled, WaitLater, JobFailed):
        raise
    except Exception as e:  # quiet kind: without this, nobody would hear and the line
        # would say "checking" for good
        releases.going_back_ended(ctx.job.pk, deploy, why, f"failed ({type(e).__name__}: {e})")
        raise


def going_back_stopped(job: Job) -> None:
    """Cancelled, or its worker died on its last attempt (the reaper queues the first
    again by itself): the deploy says its hosts were not made sure of."""
    deploy = going_back_deploy(job)
    if deploy is None:
        return
    what = "was cancelled" if job.state == JobState.CANCELLED else "was interrupted"
    releases.going_back_ended(job.pk, deploy, str(job.payload.get("why", "")), what)


when_cancelled(GOING_BACK_KIND, going_back_stopped)
when_interrupted(GOING_BACK_KIND, going_back_stopped)


def of_watch(job: Job) -> str:
    found = Watch.objects.select_related("deploy__service").filter(pk=job.payload.get("watch"))
    w = found.first()
    return f"Watch of deploy #{w.deploy_id} of {w.deploy.service.name}" if w else "A watch"


# Short: one look at what Caddy logged, then back to the queue until the next (WaitLater
# keeps one job row for the whole watch and holds no slot between looks). Quiet: the watch
# alerts by itself, through an incident, when its release is clearly worse.
@handler(WATCH_KIND, queue="short", quiet=True, describe=of_watch)
def run_watch(ctx: JobContext) -> dict[str, Any]:
    found = Watch.objects.select_related("deploy__service__org", "deploy__release", "previous")
    w = found.filter(pk=ctx.job.payload.get("watch")).first()
    if w is None or w.state not in (WatchState.WATCHING, WatchState.ROLLING_BACK):
        return {"note": "the watch ended or was removed; nothing to do"}
    here = releases.machine()
    going_on = False
    try:
        going_on = watch.look(w, here, releases.deploy_lock(here, w.deploy.service))
    finally:
        if not going_on:
            # However it ended (judged, replaced, not judged, an error): its connections to
            # hosts go with it, not at some later watch's look in this process.
            watch.close_links(w)
    if going_on:
        raise WaitLater(
            f"watching deploy #{w.deploy_id} until {w.until:%H:%M:%S}", watch.LOOK_SECONDS
        )
    return {"watch": w.pk, "state": w.state}


def watch_interrupted(job: Job) -> None:
    """Its worker died mid-look: the watch goes on from its row, in a job of its own."""
    found = Watch.objects.filter(
        pk=job.payload.get("watch"), state__in=[WatchState.WATCHING, WatchState.ROLLING_BACK]
    )
    for w in found:
        jobs.enqueue(WATCH_KIND, {"watch": w.pk}, org=job.org)


def watch_cancelled(job: Job) -> None:
    """Cancelled by a person: the watch ends, saying so, and Caddy's count with it (else
    the site's every request would be logged until its next deploy)."""
    here = releases.machine()
    found = Watch.objects.select_related("deploy__service").filter(
        pk=job.payload.get("watch"), state__in=[WatchState.WATCHING, WatchState.ROLLING_BACK]
    )
    for w in found:
        why = job.error or "cancelled"
        watch.stopped(w, here, releases.deploy_lock(here, w.deploy.service), f"the watch was {why}")


when_interrupted(WATCH_KIND, watch_interrupted)
when_cancelled(WATCH_KIND, watch_cancelled)
