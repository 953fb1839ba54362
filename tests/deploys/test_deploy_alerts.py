"""The text of deploy alerts (onwatch/deploys/releases.py `_alert`): what is wrong, since
when, what serves now, what to do, as every other alert says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.utils import timezone

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core.models import Organization
from onwatch.deploys import releases
from onwatch.deploys.models import Deploy, DeployKind, Release, State, Watch
from tests.support.deploys import service_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy(org: Organization, tmp_path: Path) -> Deploy:
    add_channel(org, "ops", "json://127.0.0.1:9/ops")  # deliveries stay rows: no worker
    service = service_for(org, str(tmp_path))
    service.domain = "shop.test"
    service.save()
    return Deploy.objects.create(
        service=service,
        trigger="cli",
        state=State.FAILED,
        reason="the release command exited with 3",
        created_at=datetime(2026, 3, 2, 8, 59, tzinfo=UTC),
        started_at=datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC),
    )


def test_a_failed_deploy_says_since_when(deploy: Deploy) -> None:
    releases.alert_failed(deploy)
    [alert] = Delivery.objects.all()
    lines = alert.body.splitlines()
    assert lines[:2] == [
        "What is wrong: the release command exited with 3",
        "Since: 2026-03-02 09:00 UTC",
    ]
    assert "What serves shop.test now: nothing" in lines
    assert lines[3].startswith("What to do: ")


def test_a_warning_and_a_rollback_that_never_started_say_since_when(deploy: Deploy) -> None:
    releases.alert_warning(deploy)
    deploy.kind, deploy.started_at = DeployKind.ROLLBACK, None
    deploy.save()
    releases.alert_failed(deploy)
    warned, failed = Delivery.objects.order_by("id")
    assert warned.title == f"Deploy #{deploy.pk} of {deploy.service.name} succeeded with a warning"
    assert "\nSince: 2026-03-02 09:00 UTC\n" in warned.body
    assert failed.title == f"Rollback #{deploy.pk} of {deploy.service.name} failed"
    assert "\nSince: 2026-03-02 08:59 UTC\n" in failed.body  # queued then, never started


def test_a_failure_before_the_switch_does_not_advise_a_rollback(deploy: Deploy) -> None:
    """A deploy stopped at its health gate left the old release serving: the alert said
    to roll back, which would take that release away."""
    deploy.live_after = "release 1 (bd5bd69)"
    releases.alert_failed(deploy)
    [alert] = Delivery.objects.all()
    assert "What to do: nothing is urgent, release 1 (bd5bd69) still serves as before." in (
        alert.body
    )
    assert "roll back" not in alert.body


def test_a_failure_before_the_switch_on_several_hosts_reads_as_one_sentence(
    deploy: Deploy,
) -> None:
    """Walked: "nothing is urgent, release 8 (c19c3ac) on this machine, nothing on
    deploy@10.0.0.8 still serves as before"."""
    deploy.live_after = "release 8 (c19c3ac) on this machine, nothing on deploy@10.0.0.8"
    releases.alert_failed(deploy)
    [alert] = Delivery.objects.all()
    assert (
        "What serves shop.test now: release 8 (c19c3ac) on this machine, nothing on "
        "deploy@10.0.0.8\nWhat to do: nothing is urgent, what served before still serves as "
        "before. Read the deploy's timeline"
    ) in alert.body


def test_a_host_that_cannot_be_read_is_not_called_nothing_urgent(deploy: Deploy) -> None:
    deploy.live_after = (
        "release 8 (c19c3ac) on this machine, unknown (deploy@10.0.0.8 cannot be reached "
        "(connection refused); release 8 (c19c3ac) when last seen) on deploy@10.0.0.8"
    )
    releases.alert_failed(deploy)
    [alert] = Delivery.objects.all()
    assert "What to do: find out why onwatch could not read a host" in alert.body
    assert "nothing is urgent" not in alert.body


def test_a_rollback_warning_says_the_release_rolled_back_to_serves(deploy: Deploy) -> None:
    """It said "the new release serves" and that the app's errors during the switch were
    the new release's to fix: after an automatic rollback they are the bad release's last."""
    deploy.kind, deploy.live_after = DeployKind.ROLLBACK, "release 1 (bd5bd69)"
    deploy.state = State.SUCCEEDED
    releases.alert_warning(deploy, [releases.ROLLBACK_FELT_TO_DO])
    [alert] = Delivery.objects.all()
    assert "nothing is urgent, release 1 (bd5bd69), made live again, serves." in alert.body
    assert "the new release" not in alert.body
    assert "the last answers of the release it replaced" in alert.body


def test_a_watched_deploys_warning_says_the_watch_may_still_roll_it_back(deploy: Deploy) -> None:
    """It said "nothing is urgent" seconds before the watch rolled the release back."""
    deploy.state, deploy.live_after = State.SUCCEEDED, "release 2 (1c83f7a)"
    deploy.save()
    Watch.objects.create(deploy=deploy, until=timezone.now(), upstream="127.0.0.1:9")
    releases.alert_warning(deploy, [releases.FELT_TO_DO])
    [alert] = Delivery.objects.all()
    assert (
        "What to do: nothing is urgent yet, the new release serves; onwatch watches it for "
        "300 s and rolls it back by itself if it answers clearly worse" in alert.body
    )


def test_a_watchs_rollback_warns_of_nothing_but_the_bad_releases_last_errors(
    deploy: Deploy,
) -> None:
    """One bad release sent three alerts: its deploy's warning, its rollback's warning (the
    bad release's last errors, counted in the switch) and the incident. The second is gone;
    a rollback by hand, or one whose switch failed requests, still warns."""
    deploy.kind, deploy.trigger, deploy.state = DeployKind.ROLLBACK, "watch", State.SUCCEEDED
    deploy.switch_failed, deploy.switch_app_errors, deploy.switch_mixed = 0, 1, 0
    deploy.save()
    releases.warn_people(deploy, [releases.ROLLBACK_FELT_TO_DO])
    assert not Delivery.objects.exists()
    deploy.switch_failed = 2
    releases.warn_people(deploy, [releases.ROLLBACK_FELT_TO_DO])
    deploy.switch_failed, deploy.trigger = 0, "ui"
    releases.warn_people(deploy, [releases.ROLLBACK_FELT_TO_DO])
    assert Delivery.objects.count() == 2


def went_back(deploy: Deploy, live: str) -> Deploy:
    """An interrupted deploy of release 2 whose going-back job said `live` serves now."""
    if deploy.release is None:
        deploy.release = Release.objects.create(service=deploy.service, commit="c19c3ac1" * 5)
    deploy.state, deploy.live_after = State.INTERRUPTED, live
    deploy.save()
    return deploy


def test_a_going_back_says_what_to_do_without_contradicting_its_first_alert(
    deploy: Deploy,
) -> None:
    """The first alert said "nothing yet, you will hear again"; the second says what is
    left to do, from what serves on each host after the going back."""
    new = str(went_back(deploy, "").release)
    cases = {
        "release 1 (bd5bd69)": (
            "What to do: nothing is urgent, release 1 (bd5bd69) serves on every host as "
            f"before the deploy. Deploy {deploy.service.name} again to ship {new}: it was "
            "cut short, not refused."
        ),
        new: (
            f"What to do: deploy {deploy.service.name} again: {new} serves on every host "
            "(each was switched before onwatch stopped), but onwatch did not record it as "
            "live, so it was not watched and a rollback would not start from it."
        ),
        "nothing": f"What to do: deploy {deploy.service.name} again: nothing serves it yet on "
        "any host.",
        f"release 1 (bd5bd69) on this machine, {new} on deploy@b": (
            f"What to do: deploy {deploy.service.name} again, which sets every host to one "
            "release; until then users may get different releases from different hosts."
        ),
    }
    for live, to_do in cases.items():
        assert releases.went_back_to_do(went_back(deploy, live), told=True) == to_do
    # Its hosts could not be read: whatever was last seen, nothing was made sure of.
    untold = releases.went_back_to_do(went_back(deploy, "release 1 (bd5bd69)"), told=False)
    assert untold == cases[f"release 1 (bd5bd69) on this machine, {new} on deploy@b"]
    unknown = "release 1 (bd5bd69) on this machine, unknown (deploy@b cannot be reached) on b"
    said = releases.went_back_to_do(went_back(deploy, unknown), told=True)
    assert said.startswith("What to do: find out why onwatch could not read a host")
    assert not [s for s in [*cases.values(), untold, said] if "nothing yet" in s]


def test_a_mix_left_after_an_interruption_says_interrupted_and_since_when(
    deploy: Deploy,
) -> None:
    """The going-back job's mix alert is the one the person woken hears next ("you will
    hear again"): it said the deploy "failed" and had no "Since" line."""
    deploy.state = State.INTERRUPTED
    releases.alert_mix(deploy, ["deploy@b: cannot be reached"], "v2 on this machine, v1 on b")
    [alert] = Delivery.objects.all()
    assert (
        alert.title == f"{deploy.service.name} serves a mix of releases after deploy #{deploy.pk}"
    )
    assert alert.body.splitlines()[:3] == [
        f"What is wrong: a deploy of {deploy.service.name} was interrupted, and going back to "
        "the release that served before failed on: deploy@b: cannot be reached",
        "Since: 2026-03-02 09:00 UTC",
        "What serves shop.test now: v2 on this machine, v1 on b",
    ]
