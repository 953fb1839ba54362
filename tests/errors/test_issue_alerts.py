"""Alerts for errors, through the alerts app to a real webhook receiver: a new issue, a
regression, a volume threshold; a crash loop sends one alert and digests, not a storm."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState, Organization
from onwatch.errors import intake, services
from onwatch.errors.models import Issue, Project
from tests.support.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db


def crash(release: str = "1.0.0", message: str = "boom") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": "KeyError", "value": message}]},
    }


def send(project: Project, *events: dict[str, Any], at: Any = None) -> None:
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", list(events))
    services.take(incoming, at or timezone.now())


def deliver() -> None:
    jobs.run_pending(kinds=["alerts.deliver"])


def run_digest() -> list[Job]:
    """Run the pending digests now rather than in ten minutes."""
    Job.objects.filter(kind=services.DIGEST_KIND, state=JobState.QUEUED).update(
        run_after=timezone.now()
    )
    done = jobs.run_pending(kinds=[services.DIGEST_KIND])
    deliver()
    return done


@pytest.fixture
def hooks(org: Organization) -> Any:
    with WebhookReceiver() as receiver:
        add_channel(org, "hook", receiver.url("/in"))
        yield receiver


@pytest.fixture
def project(org: Organization) -> Project:
    return services.add_project(org, "shop", SYSTEM)


def test_a_new_issue_is_alerted_with_what_since_when_what_to_do_and_a_link(
    project: Project, hooks: WebhookReceiver
) -> None:
    send(project, crash())
    deliver()
    issue = Issue.objects.get()
    [hook] = hooks.hooks
    assert hook.json["title"] == "shop: new error KeyError: boom"
    body = hook.json["message"]
    assert "What: KeyError: boom" in body
    assert f"Since: {issue.first_seen:%Y-%m-%d %H:%M} UTC, in 1.0.0" in body
    assert "What to do: " in body
    assert f"Details: http://localhost:8000/errors/issues/{issue.pk}/" in body


def test_a_crash_loop_sends_one_alert_then_one_digest(
    project: Project, hooks: WebhookReceiver
) -> None:
    project.volume_events = 100  # reached within the loop: it goes into the digest
    project.save()
    now = timezone.now()
    for batch in range(10):  # 1,000 events of one issue within a minute
        send(project, *[crash() for _ in range(100)], at=now + timedelta(seconds=batch * 5))
    deliver()
    assert [h.json["title"] for h in hooks.hooks] == ["shop: new error KeyError: boom"]
    run_digest()
    assert len(hooks.hooks) == 2
    digest = hooks.hooks[1].json
    assert digest["title"] == "shop: KeyError: boom is still happening"
    assert "Since the last message: 999 more events" in digest["message"]
    # The next digest comes later still, and only when there are more events.
    later = Job.objects.get(kind=services.DIGEST_KIND, state=JobState.QUEUED)
    assert later.payload["minutes"] == 20
    run_digest()
    assert len(hooks.hooks) == 2
    assert Issue.objects.get().digest_due is None


def test_a_regression_is_alerted_with_its_release(project: Project, hooks: WebhookReceiver) -> None:
    project.alert_new_issues = False
    project.save()
    send(project, crash("1.0.0"))
    issue = Issue.objects.get()
    services.resolve(issue, "1.2.0", SYSTEM, timezone.now())
    send(project, crash("1.1.0"))
    deliver()
    assert hooks.hooks == []  # an older release: still resolved, nobody woken
    send(project, crash("1.2.1"))
    deliver()
    [hook] = hooks.hooks
    assert hook.json["title"] == "shop: KeyError: boom regressed in 1.2.1"
    assert "it was resolved in 1.2.0" in hook.json["message"]


def test_a_volume_threshold_alerts_once_per_window(
    project: Project, hooks: WebhookReceiver
) -> None:
    services.change_alerts(project, False, True, 5, 10, SYSTEM)
    now = timezone.now()
    send(project, *[crash() for _ in range(4)], at=now)
    deliver()
    assert hooks.hooks == []
    send(project, crash(), at=now + timedelta(minutes=9))
    deliver()
    [hook] = hooks.hooks
    assert hook.json["title"] == "shop: KeyError: boom: 5 events in 10 min"
    assert "What to do: " in hook.json["message"]


def test_a_slow_trickle_stays_under_the_volume_threshold(
    project: Project, hooks: WebhookReceiver
) -> None:
    services.change_alerts(project, False, True, 5, 10, SYSTEM)
    now = timezone.now()
    for n in range(8):  # one every three minutes: never five within ten minutes
        send(project, crash(), at=now + timedelta(minutes=3 * n))
    deliver()
    assert hooks.hooks == []
    # Five within four minutes, straddling where a fixed window would have ended.
    later = now + timedelta(minutes=40)
    for n in range(5):
        send(project, crash(), at=later + timedelta(minutes=n))
    deliver()
    assert [h.json["title"] for h in hooks.hooks] == ["shop: KeyError: boom: 5 events in 10 min"]


def test_an_ignored_issue_that_comes_back_is_alerted(
    project: Project, hooks: WebhookReceiver
) -> None:
    project.alert_new_issues = False
    project.save()
    send(project, crash())
    issue = Issue.objects.get()
    services.ignore(issue, services.Ignore(events=2), SYSTEM, timezone.now())
    send(project, crash())
    deliver()
    assert hooks.hooks == []
    send(project, crash())
    deliver()
    [hook] = hooks.hooks
    assert hook.json["title"] == "shop: KeyError: boom is back"
    assert "it was ignored until now" in hook.json["message"]


def test_a_digest_that_never_ran_does_not_silence_the_issue_for_ever(
    project: Project, hooks: WebhookReceiver
) -> None:
    services.change_alerts(project, True, True, 3, 10, SYSTEM)
    long_ago = timezone.now() - timedelta(hours=3)
    send(project, crash(), at=long_ago)
    deliver()
    Job.objects.filter(kind=services.DIGEST_KIND).delete()  # as if it failed
    send(project, *[crash() for _ in range(3)])
    deliver()
    assert [h.json["title"] for h in hooks.hooks] == [
        "shop: new error KeyError: boom",
        "shop: KeyError: boom: 3 events in 10 min",
    ]
