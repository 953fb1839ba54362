from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from onwatch.alerts.models import Channel, Delivery, DeliveryState
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.models import AuditEntry, Job, JobState, Organization
from tests.support.fixtures import make_org, signed_in
from tests.support.receivers import WebhookReceiver

TOKEN = "hunter2-very-secret-token"
SECRET_URL = f"jsons://robot:{TOKEN}@hooks.example.com:8443/in/{TOKEN}"


def raw_url(channel: Channel) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT url FROM alerts_channel WHERE id = %s", [channel.pk])
        value: str = cur.fetchone()[0]
    return value


def audit_actions(org: Organization) -> list[str]:
    # Signing the test's members in is in the organization's log too; only the rest here.
    rows = AuditEntry.objects.filter(org=org).exclude(action="sign-in").order_by("seq")
    return list(rows.values_list("action", flat=True))


def test_the_list_shows_service_and_host_never_the_url(org: Organization, members: Any) -> None:
    add_channel(org, "ops hook", SECRET_URL)
    page = signed_in(members["viewer"]).get("/channels/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "ops hook" in html and "hooks.example.com:8443" in html
    assert TOKEN not in html and "robot" not in html
    # A viewer may look, not change or test.
    assert "/channels/add/" not in html and "Send a test" not in html


def test_an_admin_adds_a_channel_kept_encrypted_and_audited(
    org: Organization, members: Any
) -> None:
    client = signed_in(members["admin"])
    r = client.post("/channels/add/", {"name": "ops", "url": SECRET_URL})
    assert r.status_code == 302 and r["Location"] == "/channels/"
    ch = Channel.objects.get(org=org, name="ops")
    assert ch.url == SECRET_URL and ch.service == "jsons"
    assert raw_url(ch).startswith("ow1:") and TOKEN not in raw_url(ch)
    entry = AuditEntry.objects.get(action="channel-added")
    assert entry.target == "ops" and entry.actor == members["admin"].email
    assert TOKEN not in str(entry.data)
    html = client.get("/channels/").content.decode()
    assert "Channel ops added" in html and TOKEN not in html


def test_a_url_apprise_does_not_understand_is_a_form_error(org: Organization, members: Any) -> None:
    r = signed_in(members["admin"]).post(
        "/channels/add/", {"name": "ops", "url": "bogus://nope-secret"}
    )
    assert r.status_code == 200
    html = r.content.decode()
    assert "Apprise does not understand this URL" in html
    # What was typed is not echoed back into the page either.
    assert "nope-secret" not in html
    assert not Channel.objects.exists() and audit_actions(org) == []


def test_a_second_channel_with_the_same_name_is_refused(org: Organization, members: Any) -> None:
    add_channel(org, "ops", SECRET_URL)
    r = signed_in(members["owner"]).post("/channels/add/", {"name": "OPS", "url": SECRET_URL})
    assert "Another channel already has this name" in r.content.decode()
    assert Channel.objects.count() == 1


def test_editing_never_shows_the_url_and_an_empty_url_keeps_it(
    org: Organization, members: Any
) -> None:
    ch = add_channel(org, "ops", SECRET_URL)
    client = signed_in(members["admin"])
    page = client.get(f"/channels/{ch.pk}/").content.decode()
    assert "hooks.example.com:8443" in page and TOKEN not in page

    r = client.post(f"/channels/{ch.pk}/", {"name": "on-call", "url": ""})
    assert r.status_code == 302
    ch.refresh_from_db()
    assert (ch.name, ch.url) == ("on-call", SECRET_URL)

    new_url = "mailto://127.0.0.1:2525?from=onwatch@example.com&to=ops@example.com"
    client.post(f"/channels/{ch.pk}/", {"name": "on-call", "url": new_url})
    ch.refresh_from_db()
    assert (ch.url, ch.service, ch.location) == (new_url, "mailto", "127.0.0.1:2525")
    changes = AuditEntry.objects.filter(action="channel-changed").order_by("seq")
    assert [e.data["changed"] for e in changes] == [["name"], ["url"]]
    assert all(TOKEN not in str(e.data) for e in changes)


def test_removing_a_channel_keeps_its_deliveries_and_is_audited(
    org: Organization, members: Any
) -> None:
    ch = add_channel(org, "ops", SECRET_URL)
    Delivery.objects.create(org=org, channel=ch, channel_name="ops", title="old alert")
    client = signed_in(members["admin"])
    assert client.get(f"/channels/{ch.pk}/delete/").status_code == 405
    r = client.post(f"/channels/{ch.pk}/delete/")
    assert r.status_code == 302
    assert not Channel.objects.exists()
    kept = Delivery.objects.get()
    assert kept.channel is None and kept.channel_name == "ops"
    assert audit_actions(org) == ["channel-added", "channel-removed"]
    assert "(removed)" in client.get("/deliveries/").content.decode()


def test_send_a_test_queues_a_durable_delivery_that_reaches_the_receiver(
    org: Organization, members: Any
) -> None:
    with WebhookReceiver() as hooks:
        ch = add_channel(org, "ops", hooks.url("/alerts"))
        client = signed_in(members["deployer"])
        r = client.post(f"/channels/{ch.pk}/test/")
        assert r.status_code == 302 and r["Location"] == "/deliveries/"
        d = Delivery.objects.get()
        assert d.is_test and d.state == DeliveryState.PENDING
        assert d.job is not None and d.job.kind == "alerts.deliver"
        assert d.job.state == JobState.QUEUED
        page = client.get("/deliveries/").content.decode()
        assert "Test notification queued for ops" in page and "pending" in page
        assert audit_actions(org) == ["channel-added", "channel-tested"]

        jobs.run_pending(kinds=["alerts.deliver"])
    [hook] = hooks.hooks
    assert hook.path == "/alerts" and hook.json["title"] == "onwatch test notification"
    d.refresh_from_db()
    assert (d.state, d.attempts) == (DeliveryState.DELIVERED, 1)


@pytest.mark.parametrize(
    ("role", "method", "path", "allowed"),
    [
        ("viewer", "get", "/channels/add/", False),
        ("deployer", "get", "/channels/add/", False),
        ("admin", "get", "/channels/add/", True),
        ("deployer", "get", "/channels/{pk}/", False),
        ("deployer", "post", "/channels/{pk}/delete/", False),
        ("viewer", "post", "/channels/{pk}/test/", False),
        ("deployer", "post", "/channels/{pk}/test/", True),
    ],
)
def test_each_action_needs_its_permission(
    org: Organization, members: Any, role: str, method: str, path: str, allowed: bool
) -> None:
    ch = add_channel(org, "ops", SECRET_URL)
    client = signed_in(members[role])
    r = getattr(client, method)(path.format(pk=ch.pk))
    assert (r.status_code != 403) is allowed
    assert Channel.objects.filter(pk=ch.pk).exists()


def test_another_organizations_channel_is_not_found(org: Organization, members: Any) -> None:
    theirs = add_channel(make_org("Other"), "theirs", SECRET_URL)
    client = signed_in(members["owner"])
    assert client.get(f"/channels/{theirs.pk}/").status_code == 404
    assert client.post(f"/channels/{theirs.pk}/test/").status_code == 404
    assert client.post(f"/channels/{theirs.pk}/delete/").status_code == 404
    assert Channel.objects.filter(pk=theirs.pk).exists() and not Delivery.objects.exists()


def test_the_delivery_log_makes_failed_rows_stand_out(org: Organization, members: Any) -> None:
    ch = add_channel(org, "ops", SECRET_URL)
    Delivery.objects.create(
        org=org, channel=ch, channel_name="ops", title="fine", state="delivered"
    )
    Delivery.objects.create(
        org=org,
        channel=ch,
        channel_name="ops",
        title="lost",
        state="failed",
        attempts=6,
        error="Delivery failed: A Connection error occurred",
    )
    client = signed_in(members["viewer"])
    html = client.get("/deliveries/").content.decode()
    assert 'class="delivery-failed"' in html and 'class="delivery-delivered"' in html
    assert "A Connection error occurred" in html
    only_failed = client.get("/deliveries/?state=failed").content.decode()
    assert "lost" in only_failed and "fine" not in only_failed


def test_a_delivery_whose_worker_died_shows_as_interrupted(org: Organization, members: Any) -> None:
    ch = add_channel(org, "ops", SECRET_URL)
    job = Job.objects.create(kind="alerts.deliver", state=JobState.INTERRUPTED)
    Delivery.objects.create(org=org, channel=ch, channel_name="ops", title="stuck", job=job)
    html = signed_in(members["viewer"]).get("/deliveries/").content.decode()
    assert 'class="delivery-interrupted"' in html


def test_a_plain_http_hook_saved_before_the_rule_is_flagged(
    org: Organization, members: Any
) -> None:
    # Rows as an earlier version stored them, bypassing today's refusal.
    Channel.objects.create(
        org=org,
        name="old hook",
        url="json://hooks.example.com/in",
        service="json",
        location="hooks.example.com",
    )
    Channel.objects.create(
        org=org,
        name="local hook",
        url="json://127.0.0.1:8080/in",
        service="json",
        location="127.0.0.1:8080",
    )
    body = signed_in(members["viewer"]).get("/channels/").content.decode()
    old = body[body.index("old hook") : body.index("</tr>", body.index("old hook"))]
    local = body[body.index("local hook") : body.index("</tr>", body.index("local hook"))]
    assert "plain HTTP" in old and "jsons://" in old
    assert "plain HTTP" not in local
