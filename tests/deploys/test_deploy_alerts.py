"""The text of deploy alerts (onwatch/deploys/releases.py `_alert`): what is wrong, since
when, what serves now, what to do, as every other alert says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core.models import Organization
from onwatch.deploys import releases
from onwatch.deploys.models import Deploy, DeployKind, State
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
