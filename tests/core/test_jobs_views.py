"""The jobs pages: every member sees the organization's and the install-wide jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from onwatch.core import jobs as jobqueue
from onwatch.core import tasks as _core_tasks  # noqa: F401  (registers core.* handlers, as workers do)
from onwatch.core.models import Job, JobState, Membership
from tests.support.fixtures import make_org, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_the_list_shows_state_kind_duration_and_attempts(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["viewer"]).org
    start = timezone.now() - timedelta(minutes=1)
    done = Job.objects.create(
        org=org,
        kind="backups.run",
        state=JobState.SUCCEEDED,
        attempts=2,
        max_attempts=3,
        started_at=start,
        finished_at=start + timedelta(seconds=12.5),
    )
    wide = Job.objects.create(org=None, kind="alerts.deliver", state=JobState.INTERRUPTED)
    theirs = Job.objects.create(org=make_org("Other"), kind="their.secret.job")
    body = signed_in(members["viewer"]).get(reverse("jobs")).content.decode()
    assert f"backups.run #{done.pk}" in body and "12.5 s" in body and "2 of 3" in body
    assert f"alerts.deliver #{wide.pk}" in body and "install-wide" in body
    assert "their.secret.job" not in body and f"#{theirs.pk}<" not in body
    assert body.index(f"alerts.deliver #{wide.pk}") < body.index(f"backups.run #{done.pk}")


def test_the_list_filters_by_state(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["viewer"]).org
    Job.objects.create(org=org, kind="fine.job", state=JobState.SUCCEEDED)
    Job.objects.create(org=org, kind="broken.job", state=JobState.FAILED)
    client = signed_in(members["viewer"])
    failed = client.get(reverse("jobs") + "?state=failed").content.decode()
    assert "broken.job" in failed and "fine.job" not in failed
    # An unknown state shows everything rather than nothing.
    anything = client.get(reverse("jobs") + "?state=bogus").content.decode()
    assert "broken.job" in anything and "fine.job" in anything


def test_the_detail_shows_log_error_result_and_progress(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["deployer"]).org
    job = jobqueue.enqueue("core.noop", org=org)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.FAILED,
        progress=0.4,
        # A job from before log lines: its whole log in one column.
        old_log="12:00:00 copying files\n12:00:05 <oops>",
        error="disk full",
        result={"copied": 41},
    )
    r = signed_in(members["deployer"]).get(reverse("job_detail", args=[job.pk]))
    assert r.status_code == 200
    body = r.content.decode()
    assert "copying files" in body and "&lt;oops&gt;" in body
    assert "disk full" in body and "&quot;copied&quot;: 41" in body
    assert '<progress value="0.400000" max="1">' in body and "40%" in body
    assert 'style="' not in body


def test_install_wide_jobs_open_and_other_organizations_do_not(members: dict[str, Any]) -> None:
    wide = Job.objects.create(org=None, kind="core.sleep")
    theirs = Job.objects.create(org=make_org("Other"), kind="core.sleep")
    client = signed_in(members["viewer"])
    assert client.get(reverse("job_detail", args=[wide.pk])).status_code == 200
    assert client.get(reverse("job_detail", args=[theirs.pk])).status_code == 404


def test_a_job_run_by_the_queue_shows_its_worker_log_and_result(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["viewer"]).org
    job = jobqueue.enqueue("core.noop", org=org)
    ran = jobqueue.work_once("page-test-worker", kinds=["core.noop"])
    assert ran is not None and ran.pk == job.pk and ran.state == JobState.SUCCEEDED
    body = signed_in(members["viewer"]).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert (
        "ran on page-test-worker" in body
        and "&quot;worker&quot;: &quot;page-test-worker&quot;" in body
    )
    assert 'class="state-succeeded">succeeded' in body


def test_a_job_without_progress_has_no_bar(members: dict[str, Any]) -> None:
    job = Job.objects.create(org=None, kind="core.noop")
    body = signed_in(members["viewer"]).get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "<progress" not in body and "Nothing logged." in body


def test_coming_up_lists_the_next_runs_of_this_org_and_install_wide(
    members: dict[str, Any],
) -> None:
    from onwatch.core.models import Schedule

    org = Membership.objects.get(user=members["viewer"]).org
    soon = timezone.now() + timedelta(hours=2)
    Schedule.objects.create(
        org=org, name="shop nightly", kind="backups.run", cron="0 3 * * *", next_run_at=soon
    )
    Schedule.objects.create(
        org=None,
        name="Backup space reclaim",
        kind="backups.reclaim_all",
        cron="30 3 * * 0",
        next_run_at=soon + timedelta(days=3),
    )
    Schedule.objects.create(
        org=make_org("Other"),
        name="their nightly",
        kind="backups.run",
        cron="0 1 * * *",
        next_run_at=soon,
    )
    Schedule.objects.create(
        org=org,
        name="switched off",
        kind="backups.run",
        cron="0 1 * * *",
        enabled=False,
        next_run_at=soon,
    )
    body = signed_in(members["viewer"]).get(reverse("jobs")).content.decode()
    coming = body[body.index("Coming up") :]
    assert "shop nightly" in coming and "<code>0 3 * * *</code> UTC" in coming
    assert "Backup space reclaim" in coming and "install-wide" in coming
    assert coming.index("shop nightly") < coming.index("Backup space reclaim")
    assert "their nightly" not in body and "switched off" not in body


def test_a_running_jobs_page_follows_its_log_from_the_last_line_shown(
    members: dict[str, Any],
) -> None:
    org = Membership.objects.get(user=members["viewer"]).org
    job = Job.objects.create(org=org, kind="core.sleep", state=JobState.RUNNING)
    jobqueue.append_line(job.pk, "12:00:00 first")
    client = signed_in(members["viewer"])
    body = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    last = job.log_lines.get().pk
    assert f'data-after="{last}"' in body and "12:00:00 first" in body
    assert f'data-events="/jobs/{job.pk}/events/"' in body
    assert 'src="/static/onwatch/logstream.js"' in body
    jobqueue.append_line(job.pk, "12:00:01 second")
    url = reverse("job_log", args=[job.pk])
    answer = client.get(url, {"after": last}).json()
    assert answer["lines"] == ["12:00:01 second"] and answer["state"] == "running"
    assert not answer["ended"]
    assert client.get(url, {"after": "x"}).status_code == 400
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    assert client.get(url, {"after": answer["after"]}).json() == {
        "lines": [],
        "after": answer["after"],
        "state": "succeeded",
        "ended": True,
    }


def test_a_deployer_cancels_a_queued_job_from_its_page_and_a_viewer_sees_no_button(
    members: dict[str, Any],
) -> None:
    org = Membership.objects.get(user=members["deployer"]).org
    job = jobqueue.enqueue("core.sleep", org=org)
    page = reverse("job_detail", args=[job.pk])
    assert "Cancel this job" not in signed_in(members["viewer"]).get(page).content.decode()
    deployer = signed_in(members["deployer"])
    assert "Cancel this job" in deployer.get(page).content.decode()
    r = deployer.post(reverse("job_cancel", args=[job.pk]), follow=True)
    assert f"Job #{job.pk} is cancelled; it will not run." in r.content.decode()
    job.refresh_from_db()
    assert (job.state, job.error) == (
        JobState.CANCELLED,
        f"cancelled by {members['deployer'].email}",
    )
    wide = Job.objects.create(org=None, kind="core.sleep")
    assert deployer.post(reverse("job_cancel", args=[wide.pk])).status_code == 404


def test_a_deployer_cannot_cancel_an_alert_and_an_admin_can(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["deployer"]).org
    job = jobqueue.enqueue("alerts.deliver", {}, org=org, queue="alerts")
    page = reverse("job_detail", args=[job.pk])
    deployer = signed_in(members["deployer"])
    assert "Cancel this job" not in deployer.get(page).content.decode()
    r = deployer.post(reverse("job_cancel", args=[job.pk]), follow=True)
    said = f"job #{job.pk} sends an alert; only someone who may manage alert channels"
    assert said in r.content.decode()
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED
    admin = signed_in(members["admin"])
    assert "Cancel this job" in admin.get(page).content.decode()
    admin.post(reverse("job_cancel", args=[job.pk]))
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED
