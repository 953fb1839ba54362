"""A member's own channel: where they hear about their own pushes. Set on its own page by
any member, kept encrypted, tested with the real Apprise against a local receiver, and
never one of the organization's channels (lists, pickers, organization-wide alerts)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from onwatch.alerts import services
from onwatch.alerts.models import Channel
from onwatch.core import jobs, keys
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Membership, Organization
from tests.support.fixtures import signed_in
from tests.support.receivers import WebhookReceiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
TOKEN = "my-own-very-secret-token"


def raw_url(channel: Channel) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT url FROM alerts_channel WHERE id = %s", [channel.pk])
        value: str = cur.fetchone()[0]
    return value


def test_a_viewer_sets_tests_and_removes_a_channel_of_their_own(
    org: Organization, members: dict[str, Any]
) -> None:
    viewer = signed_in(members["viewer"])
    with WebhookReceiver() as hooks:
        url = hooks.url(f"/mine/{TOKEN}")
        r = viewer.post("/channels/mine/", {"url": url})
        assert r.status_code == 302 and r["Location"] == "/channels/mine/"
        mine = services.own_channel(org, members["viewer"])
        assert mine is not None and mine.owner == members["viewer"]
        assert raw_url(mine).startswith("ow1:") and TOKEN not in raw_url(mine)
        page = viewer.get("/channels/mine/").content.decode()
        assert "Sends to <strong>json</strong>" in page and TOKEN not in page
        # Someone else's page shows theirs (none), never this one.
        other = signed_in(members["deployer"]).get("/channels/mine/").content.decode()
        assert "Not set" in other and "Sends to" not in other
        r = viewer.post("/channels/mine/test/")
        assert r.status_code == 302
        jobs.run_pending(kinds=["alerts.deliver"])
        [hook] = hooks.hooks
        assert hook.path == f"/mine/{TOKEN}"
        assert hook.json["title"] == services.TEST_TITLE
    assert "delivered" in viewer.get("/channels/mine/").content.decode()
    r = viewer.post("/channels/mine/remove/")
    assert r.status_code == 302 and services.own_channel(org, members["viewer"]) is None
    actions = list(
        AuditEntry.objects.filter(action__startswith="own-channel")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["own-channel-set", "own-channel-removed"]
    assert "channel-tested" in AuditEntry.objects.values_list("action", flat=True)


def test_a_url_apprise_does_not_know_is_one_line_on_the_form(members: dict[str, Any]) -> None:
    r = signed_in(members["viewer"]).post("/channels/mine/", {"url": "nonsense://x"})
    assert r.status_code == 200
    assert 'class="errorlist' in r.content.decode()
    assert not Channel.every.exists()


def test_an_own_channel_is_not_one_of_the_organizations_channels(
    org: Organization, members: dict[str, Any]
) -> None:
    shared = services.add_channel(org, "ops", "json://127.0.0.1:9/ops")
    mine = services.set_own_channel(org, members["admin"], "json://127.0.0.1:9/mine", SYSTEM)
    # Organization-wide alerts, the channel list, the API and the pickers leave it out.
    assert [d.channel for d in services.raise_alert(org, "Site down", "502")] == [shared]
    assert services.organization_channels(org) == [shared]
    listed = signed_in(members["admin"]).get("/channels/").content.decode()
    assert "ops" in listed and mine.name not in listed
    assert services.channel_count(org) == 1
    # Not even an admin reaches a member's own channel by its number: it is theirs alone.
    owner = signed_in(members["owner"])
    assert owner.get(f"/channels/{mine.pk}/").status_code == 404
    for path in ("", "test/", "delete/"):
        assert owner.post(f"/channels/{mine.pk}/{path}").status_code == 404
    with pytest.raises(services.Refused):
        services.channels_of(org, [mine.pk])
    # Still a channel with an encrypted URL: the key rotation re-encrypts it too.
    before = raw_url(mine)
    keys.rotate()
    assert raw_url(mine) != before
    assert Channel.every.get(pk=mine.pk).url == "json://127.0.0.1:9/mine"


def test_a_former_member_no_longer_hears_on_their_own_channel(
    org: Organization, members: dict[str, Any]
) -> None:
    services.set_own_channel(org, members["deployer"], "json://127.0.0.1:9/mine", SYSTEM)
    assert services.own_channel(org, members["deployer"]) is not None
    Membership.objects.filter(org=org, user=members["deployer"]).delete()
    assert services.own_channel(org, members["deployer"]) is None
