"""Who hears about a project's errors (onwatch/errors/alerting.py): a project linked to a
service alerts whoever hears about the service; any other, the whole organization."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from onwatch.alerts.models import Channel, Delivery
from onwatch.alerts.services import add_channel
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.errors import intake, services
from onwatch.errors.models import Project
from tests.support.deploys import service_for

pytestmark = pytest.mark.django_db


def crash(project: Project, message: str) -> None:
    event = {
        "event_id": uuid.uuid4().hex,
        "exception": {"values": [{"type": "E", "value": message}]},
    }
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", [event])
    services.take(incoming, timezone.now())


def told(message: str) -> list[str]:
    """The channels the alert of the new issue `message` went to."""
    found = Delivery.objects.filter(title__endswith=f"new error E: {message}")
    return sorted(found.values_list("channel_name", flat=True))


@pytest.fixture
def channels(org: Organization) -> list[Channel]:
    # Deliveries stay rows here (no worker runs): nothing needs to listen.
    return [add_channel(org, name, f"json://127.0.0.1:9/{name}") for name in ("ops", "shop-team")]


def test_a_project_linked_to_a_service_alerts_the_services_channels(
    org: Organization, channels: list[Channel], tmp_path: Path
) -> None:
    service = service_for(org, str(tmp_path))
    service.all_channels = False
    service.save()
    service.channels.set([channels[1]])
    linked = services.add_project(org, "shop", SYSTEM)
    services.link_service(linked, service.pk, SYSTEM)
    alone = services.add_project(org, "scripts", SYSTEM)
    crash(linked, "in the shop")
    crash(alone, "in a script")
    assert told("in the shop") == ["shop-team"]
    assert told("in a script") == ["ops", "shop-team"]  # the organization's default
    # A service that lets every channel hear, or whose chosen ones are all gone: everyone.
    service.all_channels = True
    service.save()
    crash(linked, "to all")
    assert told("to all") == ["ops", "shop-team"]
    service.all_channels = False
    service.save()
    channels[1].delete()
    crash(linked, "after the team's channel went")
    assert told("after the team's channel went") == ["ops"]
