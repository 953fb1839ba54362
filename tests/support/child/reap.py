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
    from onwatch.core.models import ENDED, Job

    wait_until(Job.objects.filter(pk=job_id, state__in=ENDED).exists)
    job = Job.objects.get(pk=job_id)
    if job.alerted:
        wait_until(Delivery.objects.filter(title__contains=f"#{job_id} ").exists)
    titles = list(Delivery.objects.values_list("title", flat=True))
    print(json.dumps([job.state, job.error, job.alerted, titles]))
