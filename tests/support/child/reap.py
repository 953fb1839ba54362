"""Child-process functions for the reaping of jobs whose worker died (see tests.support.child)."""

from __future__ import annotations

import json

from tests.support.child import wait_until


def sleeping_job(alert_port: int) -> None:
    """An organization with an alert channel, and a ten-minute job of it; prints its id."""
    from onwatch.alerts.services import add_channel
    from onwatch.core import jobs
    from onwatch.core.models import Organization

    org = Organization.objects.create(name="Acme")
    add_channel(org, "ops", f"json://127.0.0.1:{alert_port}/")
    print(jobs.enqueue("core.sleep", {"seconds": 600}, org=org).pk)


def wait_running(job_id: int) -> None:
    from onwatch.core.models import JobLogLine

    wait_until(JobLogLine.objects.filter(job_id=job_id, text__contains="sleeping").exists)


def ended(job_id: int) -> None:
    """Once the job has ended: its state, error, whether it alerted, and the alerts' titles."""
    from onwatch.alerts.models import Delivery
    from onwatch.core.jobs import QUIET_KINDS
    from onwatch.core.models import ENDED, Job, JobState

    wait_until(Job.objects.filter(pk=job_id, state__in=ENDED).exists)
    job = Job.objects.get(pk=job_id)
    if job.state in (JobState.FAILED, JobState.INTERRUPTED) and job.kind not in QUIET_KINDS:
        # Its end is written first, its alert just after (jobs.ended): wait for that too.
        wait_until(Job.objects.filter(pk=job_id, alerted=True).exists)
        job.refresh_from_db()
    if job.alerted:
        wait_until(Delivery.objects.filter(title__contains=f"#{job_id} ").exists)
    titles = list(Delivery.objects.values_list("title", flat=True))
    print(json.dumps([job.state, job.error, job.alerted, titles]))


def backed_up_plan(alert_port: int, db_path: str, repo: str) -> None:
    """An organization with an alert channel and a SQLite plan with one good backup that
    a drill proved restorable, made the way onwatch makes them; prints the plan's id."""
    from onwatch.alerts.services import add_channel
    from onwatch.backups import services
    from onwatch.backups.drills import run_drill
    from onwatch.backups.runs import run_backup
    from onwatch.core.models import Organization

    org = Organization.objects.create(name="Acme")
    add_channel(org, "ops", f"json://127.0.0.1:{alert_port}/")
    repository = services.add_repository(org, "local", repo, provider="here")
    source = services.add_source(org, "app", "sqlite", path=db_path)
    plan = services.add_plan(source, "nightly", [repository])
    run = run_backup(plan, lambda line: None)
    assert run.state == "succeeded", run.error
    drill = run_drill(plan, lambda line: None)
    assert drill.state == "succeeded", drill.error
    print(plan.pk)


def enqueue_for_plan(kind: str, plan_id: int) -> None:
    from onwatch.backups.models import Plan
    from onwatch.core import jobs

    plan = Plan.objects.get(pk=plan_id)
    print(jobs.enqueue(kind, {"plan": plan.pk}, org=plan.org).pk)


def ended_with_alerts(job_id: int) -> None:
    """Once the job has ended (and its alert, if any, is recorded): its state, error, and
    the titles of every alert raised."""
    from onwatch.alerts.models import Delivery
    from onwatch.core.jobs import QUIET_KINDS
    from onwatch.core.models import ENDED, Job, JobState

    wait_until(Job.objects.filter(pk=job_id, state__in=ENDED).exists)
    job = Job.objects.get(pk=job_id)
    if job.state in (JobState.FAILED, JobState.INTERRUPTED) and job.kind not in QUIET_KINDS:
        # Its end is written first, its alert just after (jobs.ended): wait for that too.
        wait_until(Job.objects.filter(pk=job_id, alerted=True).exists)
        job.refresh_from_db()
    if job.alerted:
        wait_until(Delivery.objects.exists)
    titles = list(Delivery.objects.values_list("title", flat=True))
    print(json.dumps([job.state, job.error, titles]))


def plan_state(plan_id: int) -> None:
    """What the pages and restores see of a plan: its runs and drills (newest first, state
    and error), the proof, the runs restores may pick, and the Backups page's verdict."""
    from onwatch.backups import restores
    from onwatch.backups.models import Plan
    from onwatch.backups.summary import row

    plan = Plan.objects.get(pk=plan_id)
    summary = row(plan)
    offered = restores.verified_snapshots(plan, plan.copies.get())
    print(
        json.dumps(
            {
                "runs": [[r.pk, r.state, r.error] for r in plan.runs.all()],
                "drills": [[d.pk, d.state, d.error] for d in plan.drills.all()],
                "proven": summary.last_proven.pk if summary.last_proven else None,
                "last_drill": summary.last_drill.pk if summary.last_drill else None,
                "offered": [v.copy.run_id for v in offered],
                "problems": summary.problems,
            }
        )
    )
