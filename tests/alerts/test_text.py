"""What an alert says, read at a real webhook receiver and a real SMTP server: what is
wrong, since when (the first failed check, not the confirmation), what to do, a full link
back to onwatch, the job's own output for a failed heartbeat, and the Apprise type that
makes a failure look like one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from onwatch.alerts import incidents
from onwatch.alerts.services import add_channel, send_test
from onwatch.backups import services
from onwatch.backups.models import SourceKind
from onwatch.config import BaseUrl
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.uptime import heartbeats
from onwatch.uptime.models import Kind, Monitor
from onwatch.uptime.services import pause, resume
from onwatch.uptime.state import Outcome, apply, source
from tests.support.backups import local_repo, plan_for, sqlite_file
from tests.support.fixtures import signed_in
from tests.support.receivers import Hook, SmtpReceiver, WebhookReceiver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SITE = "https://watch.acme.example"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(autouse=True)
def base_url(settings: Any) -> None:
    # As ONWATCH_BASE_URL=https://watch.acme.example would set it.
    settings.SITE = BaseUrl("https", "watch.acme.example", None)


def run_deliveries() -> int:
    return len(jobs.run_pending(kinds=["alerts.deliver"]))


def shop(org: Organization) -> Monitor:
    return Monitor.objects.create(
        org=org, name="shop", kind=Kind.HTTP, config={"url": "https://shop.example/"}
    )


def fail(m: Monitor, now: datetime) -> None:
    apply(m, Outcome(ok=False, status_code=502, error="Got status 502, expected 200-299"), now)


def lines(hook: Hook) -> list[str]:
    return str(hook.json["message"]).splitlines()


def test_an_outage_alert_says_what_since_when_what_to_do_and_links_back(
    org: Organization,
) -> None:
    m = shop(org)  # three failures in a row confirm an outage
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        for minute in (0, 1, 2):
            fail(m, at(minute))
        run_deliveries()
    [hook] = hooks.hooks
    incident = incidents.current(org, source(m))
    assert incident is not None and incident.opened_at == at(2)
    assert hook.json["title"] == "shop is down"
    assert hook.json["type"] == "failure"
    text = lines(hook)
    assert text[0] == "What is wrong: Got status 502, expected 200-299"
    # Since the first failed check, not since the third one confirmed it.
    assert text[1] == "Since: 2026-03-02 09:00 UTC (first failed check; confirmed 09:02)"
    assert "Status: 502" in text
    [advice] = [line for line in text if line.startswith("What to do: ")]
    assert "monitor's page" in advice and "Acknowledge" in advice
    assert text[-2:] == [
        f"Incident: {SITE}/incidents/{incident.pk}/",
        f"Details: {SITE}/monitors/{m.pk}/",
    ]


def test_reminders_are_failures_too_and_the_recovery_says_it_is_up_again(
    org: Organization,
) -> None:
    m = shop(org)
    m.confirmations = 1
    m.save()
    with WebhookReceiver() as hooks, SmtpReceiver() as smtp:
        add_channel(org, "hook", hooks.url())
        add_channel(org, "mail", smtp.url())
        fail(m, at(0))
        apply(m, Outcome(ok=True, status_code=200, latency_ms=41), at(7))
        run_deliveries()
    assert [(h.json["title"], h.json["type"]) for h in hooks.hooks] == [
        ("shop is down", "failure"),
        ("shop is up again", "success"),
    ]
    recovery = lines(hooks.hooks[1])
    assert recovery[0] == (
        "The incident “shop is down” is over after 7 min (since 2026-03-02 09:00 UTC)."
    )
    assert f"Details: {SITE}/monitors/{m.pk}/" in recovery
    assert [mail.subject for mail in smtp.mails] == ["shop is down", "shop is up again"]
    # One fact a line in a mail too, not run together into one.
    assert smtp.mails[0].text.splitlines()[:2] == [
        "What is wrong: Got status 502, expected 200-299",
        "Since: 2026-03-02 09:00 UTC",
    ]
    assert f"{SITE}/monitors/{m.pk}/" in smtp.mails[1].text


def heartbeat(org: Organization) -> Monitor:
    return Monitor.objects.create(
        org=org,
        name="nightly dump",
        kind=Kind.HEARTBEAT,
        confirmations=1,
        config=heartbeats.validate({"period": 3600, "grace": 60}),
    )


def test_a_failed_heartbeat_alert_carries_what_the_job_sent(org: Organization) -> None:
    hb = heartbeat(org)
    output = 'pg_dump: error: connection to server failed: FATAL: role "app" is locked'
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        answer = Client().post(f"/ping/{hb.ping_id}/3", output, content_type="text/plain")
        assert answer.status_code == 200
        run_deliveries()
    [hook] = hooks.hooks
    assert hook.json["title"] == "nightly dump is down"
    assert hook.json["type"] == "failure"
    text = lines(hook)
    assert text[0] == "What is wrong: The job reported failure with exit status 3"
    assert "Exit status: 3" in text
    assert text[text.index("What the job sent ended with:") + 1] == output
    assert f"Details: {SITE}/monitors/{hb.pk}/" in text


def test_a_fail_ping_without_exit_status_carries_its_output_too(org: Organization) -> None:
    hb = heartbeat(org)
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        Client().post(f"/ping/{hb.ping_id}/fail", "disk full", content_type="text/plain")
        run_deliveries()
    text = lines(hooks.hooks[0])
    assert text[text.index("What the job sent ended with:") + 1] == "disk full"


def test_a_long_job_output_alerts_with_its_end_and_the_page_keeps_it_whole(
    org: Organization, members: dict[str, Any]
) -> None:
    hb = heartbeat(org)
    progress = [f"dumping table public.t{i:03d}" for i in range(40)]
    warning = "pg_dump: warning: " + "x" * 400
    error = "pg_dump: error: could not write to output file: No space left"
    output = "\n".join([*progress, warning, error])
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        Client().post(f"/ping/{hb.ping_id}/1", output, content_type="text/plain")
        run_deliveries()
    text = lines(hooks.hooks[0])
    end = text.index("What the job sent ended with:")
    # The error is the last line; the one before is cut to a readable length, and no
    # line is shown from its middle.
    assert text[end + 1 : end + 3] == [warning[:199] + "…", error]
    assert not any(line.startswith(("g table", "table")) for line in text)
    assert all(len(line) <= 220 for line in text), text
    assert not any("public.t000" in line for line in text)
    page = signed_in(members["viewer"]).get(f"/monitors/{hb.pk}/").content.decode()
    assert "public.t000" in page and "No space left" in page


@jobs.handler("tests.alerts-text-backup", describe=lambda job: "Backup of nightly")
def _failing_backup(ctx: jobs.JobContext) -> None:
    raise jobs.JobFailed("restic: repository is locked")


def test_a_failed_job_alert_names_the_work_links_its_page_and_is_a_failure(
    org: Organization,
) -> None:
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        failed = jobs.enqueue("tests.alerts-text-backup", org=org)
        jobs.run_pending(kinds=["tests.alerts-text-backup"])
        run_deliveries()
    [hook] = hooks.hooks
    assert hook.json["title"] == "Backup of nightly failed"
    assert hook.json["type"] == "failure"
    text = lines(hook)
    assert text[0] == "What is wrong: restic: repository is locked"
    assert text[1].startswith("Since: ")
    assert text[2].startswith("What to do: read the job's log")
    assert text[-1] == f"Details: {SITE}/jobs/{failed.pk}/"


def test_a_test_notification_stays_information(org: Organization) -> None:
    with WebhookReceiver() as hooks:
        send_test(add_channel(org, "hook", hooks.url()), SYSTEM)
        run_deliveries()
    assert hooks.hooks[0].json["type"] == "info"


def test_a_failed_backup_alert_names_its_plan(org: Organization, tmp_path: Path) -> None:
    source = services.add_source(
        org, "notes db", SourceKind.SQLITE, path=str(sqlite_file(tmp_path / "notes.sqlite3"))
    )
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    (tmp_path / "notes.sqlite3").unlink()  # the database to back up is gone
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        job = jobs.enqueue("backups.run", {"plan": plan.pk}, org=org)
        jobs.run_pending(kinds=["backups.run"])
        run_deliveries()
    [hook] = hooks.hooks
    assert hook.json["title"] == "Backup of nightly failed"
    assert hook.json["type"] == "failure"
    assert lines(hook)[-1] == f"Details: {SITE}/jobs/{job.pk}/"


@pytest.mark.usefixtures("fast_passwords")
def test_the_incident_page_says_when_it_began_what_to_do_and_links_the_monitor(
    org: Organization, members: dict[str, Any]
) -> None:
    m = shop(org)
    for minute in (0, 1, 2):
        fail(m, at(minute))
    incident = incidents.current(org, source(m))
    assert incident is not None
    html = signed_in(members["viewer"]).get(f"/incidents/{incident.pk}/").content.decode()
    assert "Trouble began 2026-03-02 09:00:00 (the first failed check)." in html
    assert f'<a href="/monitors/{m.pk}/">' in html
    assert "What to do: Open the monitor&#x27;s page" in html


def test_since_starts_over_after_a_pause(org: Organization) -> None:
    m = shop(org)
    fail(m, at(0))
    m.refresh_from_db()
    assert pause(m, at(5))
    m.refresh_from_db()  # resume reads the state pause wrote
    assert resume(m, at(50))
    m.refresh_from_db()
    for minute in (60, 61, 62):
        fail(m, at(minute))
    incident = incidents.current(org, source(m))
    assert incident is not None and incident.since == at(60)
