"""Deliveries end to end: durable jobs, the real Apprise, real SMTP and HTTP receivers."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from onwatch.alerts.models import Delivery, DeliveryState
from onwatch.alerts.services import DELIVERY_ATTEMPTS, add_channel, deliver
from onwatch.core import jobs
from onwatch.core.models import Job, JobState, Organization
from tests.support.receivers import SmtpReceiver, WebhookReceiver


def run_deliveries() -> list[Job]:
    return jobs.run_pending(kinds=["alerts.deliver"])


def job_of(delivery: Delivery) -> Job:
    assert delivery.job_id is not None
    return Job.objects.get(pk=delivery.job_id)


def make_due(delivery: Delivery) -> None:
    """Skip the back-off wait: the retry is due now instead of in minutes."""
    Job.objects.filter(pk=job_of(delivery).pk).update(run_after=timezone.now())


def seconds_until_retry(delivery: Delivery) -> float:
    job = job_of(delivery)
    assert job.state == JobState.QUEUED
    return (job.run_after - timezone.now()).total_seconds()


def test_an_email_channel_delivers_to_a_real_smtp_server(org: Organization) -> None:
    with SmtpReceiver() as smtp:
        ch = add_channel(org, "mail", smtp.url(to="ops@example.com"))
        d = deliver(ch, "Backup failed", "The nightly backup of db-1 failed.")
        [job] = run_deliveries()
    assert job.state == JobState.SUCCEEDED
    [mail] = smtp.mails
    assert mail.mail_from == "onwatch@example.com" and mail.rcpt_tos == ["ops@example.com"]
    assert mail.subject == "Backup failed"
    assert "The nightly backup of db-1 failed." in mail.text
    d.refresh_from_db()
    assert (d.state, d.attempts, d.error) == (DeliveryState.DELIVERED, 1, "")
    assert d.finished_at is not None


def test_a_webhook_channel_posts_title_and_body(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        ch = add_channel(org, "hook", hooks.url("/onwatch/in"))
        deliver(ch, "Site down", "https://shop.example.com answers 502")
        run_deliveries()
    [hook] = hooks.hooks
    assert hook.path == "/onwatch/in"
    assert hook.json["title"] == "Site down"
    assert hook.json["message"] == "https://shop.example.com answers 502"


def test_a_flaky_receiver_gets_the_alert_on_the_third_attempt(org: Organization) -> None:
    with WebhookReceiver(statuses=[500, 500], then=200) as hooks:
        ch = add_channel(org, "hook", hooks.url())
        d = deliver(ch, "Site down", "502s")

        run_deliveries()
        d.refresh_from_db()
        assert (d.state, d.attempts) == (DeliveryState.RETRYING, 1)
        assert "error=500" in d.error
        # Back-off: the first retry waits about 15 s, and nothing runs before it is due.
        assert 13 < seconds_until_retry(d) <= 15
        assert run_deliveries() == []

        make_due(d)
        run_deliveries()
        d.refresh_from_db()
        assert (d.state, d.attempts) == (DeliveryState.RETRYING, 2)
        assert 28 < seconds_until_retry(d) <= 30  # and it doubles

        make_due(d)
        [job] = run_deliveries()
    assert hooks.answers == [500, 500, 200]
    d.refresh_from_db()
    assert (d.state, d.attempts, d.error) == (DeliveryState.DELIVERED, 3, "")
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 3)
    assert "attempt 1 failed" in job.log and "attempt 2 failed" in job.log


def test_a_receiver_that_never_works_ends_failed_with_its_error(org: Organization) -> None:
    with WebhookReceiver(then=503) as hooks:
        ch = add_channel(org, "hook", hooks.url())
        d = deliver(ch, "Site down", "502s")
        for _ in range(DELIVERY_ATTEMPTS):
            make_due(d)
            run_deliveries()
    assert len(hooks.hooks) == DELIVERY_ATTEMPTS
    d.refresh_from_db()
    assert (d.state, d.attempts) == (DeliveryState.FAILED, DELIVERY_ATTEMPTS)
    assert "Delivery failed" in d.error and "error=503" in d.error
    assert d.finished_at is not None
    job = job_of(d)
    assert job.state == JobState.FAILED and "error=503" in job.error
    # Nothing more to try, and a failed delivery does not alert about itself (it would loop).
    make_due(d)
    assert run_deliveries() == []
    assert Delivery.objects.count() == 1


@jobs.handler("tests.alerts-backup")
def _failing_backup(ctx: jobs.JobContext) -> None:
    raise jobs.JobFailed("restic: repository is locked")


def test_a_failing_job_of_another_kind_alerts_every_channel_of_its_org(
    org: Organization,
) -> None:
    with WebhookReceiver() as hooks, SmtpReceiver() as smtp:
        add_channel(org, "hook", hooks.url())
        add_channel(org, "mail", smtp.url())
        elsewhere = Organization.objects.create(name="Elsewhere")
        add_channel(elsewhere, "theirs", hooks.url("/not-for-acme"))

        failed = jobs.enqueue("tests.alerts-backup", org=org)
        [done] = jobs.run_pending(kinds=["tests.alerts-backup"])
        assert done.state == JobState.FAILED and done.alerted

        rows = Delivery.objects.filter(org=org).order_by("channel_name")
        assert [r.channel_name for r in rows] == ["hook", "mail"]
        title = f"Background job tests.alerts-backup #{failed.pk} failed"
        assert {r.title for r in rows} == {title}
        assert not Delivery.objects.filter(org=elsewhere).exists()

        run_deliveries()
    [hook] = hooks.hooks
    assert hook.path == "/hook"
    assert hook.json["title"] == title
    assert hook.json["message"].startswith("What is wrong: restic: repository is locked")
    [mail] = smtp.mails
    assert mail.subject == title and "restic: repository is locked" in mail.text
    assert set(Delivery.objects.values_list("state", flat=True)) == {DeliveryState.DELIVERED}


def test_a_delivery_to_a_removed_channel_fails_with_the_reason(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        ch = add_channel(org, "hook", hooks.url())
        d = deliver(ch, "Site down", "502s")
        ch.delete()
        [job] = run_deliveries()
    assert hooks.hooks == []
    d.refresh_from_db()
    assert (d.state, d.error) == (DeliveryState.FAILED, "The channel was removed")
    assert job.state == JobState.FAILED


def test_backoff_doubles_and_is_capped() -> None:
    assert [jobs.backoff(n) for n in (1, 2, 3)] == [15, 30, 60]
    assert jobs.backoff(30) == timedelta(hours=1).total_seconds()
