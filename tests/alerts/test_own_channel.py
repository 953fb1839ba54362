"""A member's own channel: where they hear about their own pushes. Set on its own page by
any member, kept encrypted, tested with the real Apprise against a local receiver, and
never one of the organization's channels (lists, pickers, organization-wide alerts)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from onwatch.alerts import services
from onwatch.alerts.models import Channel, Delivery, DeliveryState
from onwatch.core import jobs, keys
from onwatch.core.audit import SYSTEM
from onwatch.core.models import AuditEntry, Membership, Organization
from tests.support.fixtures import signed_in
from tests.support.receivers import SmtpReceiver, WebhookReceiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
TOKEN = "my-own-very-secret-token"


def raw_url(channel: Channel) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT url FROM alerts_channel WHERE id = %s", [channel.pk])
        value: str = cur.fetchone()[0]
    return value


def test_a_viewer_sets_tests_and_removes_a_channel_of_their_own(
    org: Organization, members: dict[str, Any], settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # the receiver listens on this machine
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
    org: Organization, members: dict[str, Any], settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # its URL is on this machine
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
    org: Organization, members: dict[str, Any], settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # its URL is on this machine
    services.set_own_channel(org, members["deployer"], "json://127.0.0.1:9/mine", SYSTEM)
    assert services.own_channel(org, members["deployer"]) is not None
    Membership.objects.filter(org=org, user=members["deployer"]).delete()
    assert services.own_channel(org, members["deployer"]) is None


@pytest.mark.parametrize(
    "url",
    [
        "jsons://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "jsons://10.0.0.5/hook",
        "jsons://192.168.1.10:8443/hook",
        "json://127.0.0.1:8000/admin",
        "jsons://localhost:2019/config/",  # a name: resolved, it is this machine
        "jsons://[::1]:2019/config/",
        "jsons://[::ffff:127.0.0.1]/x",
        "jsons://[fd00::1]/x",
        "mailtos://user:pass@172.16.0.3",
    ],
)
def test_an_own_channel_inside_the_network_is_refused_with_one_line(
    members: dict[str, Any], url: str
) -> None:
    """Any member sets their own channel, a viewer too: it must not let them make onwatch
    request the metadata service, this machine's admin ports or the local network."""
    r = signed_in(members["viewer"]).post("/channels/mine/", {"url": url})
    assert r.status_code == 200
    page = r.content.decode()
    assert "at a public address (not this machine or its local network)" in page
    assert "is inside the network (this machine, a private or a link-local address)" in page
    assert "an admin can add it as one of the organization" in page
    assert not Channel.every.exists()


def test_an_own_channel_is_checked_again_at_every_delivery(
    org: Organization, members: dict[str, Any], settings: Any
) -> None:
    """A name can resolve elsewhere by the time it is used, and mailto takes its server
    from a parameter: the address each delivery really connects to is checked. The
    organization's channels, which admins set, still reach this machine."""
    viewer = signed_in(members["viewer"])
    with WebhookReceiver() as hooks, SmtpReceiver() as smtp:
        # Saved while the operator allowed it (or while its name resolved elsewhere).
        settings.OWN_CHANNELS_PRIVATE = True
        services.set_own_channel(org, members["viewer"], hooks.url(f"/mine/{TOKEN}"), SYSTEM)
        settings.OWN_CHANNELS_PRIVATE = False
        assert viewer.post("/channels/mine/test/").status_code == 302
        jobs.run_pending(kinds=["alerts.deliver"])
        assert hooks.hooks == []
        [refused] = Delivery.objects.all()
        assert refused.state == DeliveryState.FAILED  # at once: trying again will not help
        assert refused.error.startswith("Not sent: 127.0.0.1 is inside the network")
        # mailto's server named by ?smtp=: the host before it is a public address.
        by_smtp = (
            f"mailtos://me:pw@8.8.8.8?smtp=127.0.0.1&port={smtp.port}"
            "&from=me@example.com&to=me@example.com"
        )
        services.set_own_channel(org, members["viewer"], by_smtp, SYSTEM)
        services.send_test(services.own_channel(org, members["viewer"]), SYSTEM)  # type: ignore[arg-type]
        jobs.run_pending(kinds=["alerts.deliver"])
        assert smtp.mails == []
        last = Delivery.objects.order_by("-id").first()
        assert last is not None and "Not sent: 127.0.0.1 is inside the network" in last.error
        # The organization's channel to the same receiver, set by an admin, is delivered.
        shared = services.add_channel(org, "ops", hooks.url("/ops"))
        services.send_test(shared, SYSTEM)
        jobs.run_pending(kinds=["alerts.deliver"])
        assert [h.path for h in hooks.hooks] == ["/ops"]


def test_a_datagram_of_an_own_channel_to_an_inside_address_is_not_sent() -> None:
    # Syslog over UDP sends each message with its address and never connects: the guard
    # must see the datagram, not only connections.
    import socket

    from onwatch.alerts import apprise

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(1.0)
        port = listener.getsockname()[1]
        url = f"rsyslog://127.0.0.1:{port}/"
        with pytest.raises(apprise.InsideNetwork, match=r"127\.0\.0\.1 is inside the network"):
            apprise.send(url, "shop is down", "since 12:00", public_only=True)
        with pytest.raises(TimeoutError):
            listener.recvfrom(65536)
        # Unguarded (an organization's channel) it goes: the listener is a real receiver.
        apprise.send(url, "shop is down", "since 12:00")
        assert b"shop is down" in listener.recvfrom(65536)[0]
