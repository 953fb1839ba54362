"""Owners see their members' sign-in activity (successes, failures, pauses) with address
and time, in the audit API and on a page of its own, and many failures for one account
send an alert through the organization's channels."""

from __future__ import annotations

import re
from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.conf import settings
from django.test import Client
from django.urls import reverse

from onwatch.accounts.services import ALERT_AFTER
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.models import AuditEntry, Organization
from onwatch.core.roles import Role
from onwatch.core.services import issue_token
from tests.support.fixtures import PASSWORD, make_member, make_org, signed_in
from tests.support.receivers import WebhookReceiver
from tests.support.totp import totp_now

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def member_with_app(org: Organization, role: str, email: str) -> tuple[Any, str]:
    user = make_member(org, role, email=email, mfa=False)
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return user, secret


def wrong_password(client: Client, email: str) -> None:
    client.post(LOGIN, {"login": email, "password": "not the password at all"})


def audit_api(owner: Any, org: Organization) -> list[dict[str, Any]]:
    raw = issue_token(owner, org, "test", ["audit:read"], 1).raw
    r = Client().get("/api/v1/audit/", headers={"authorization": f"Bearer {raw}"})
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


def test_owners_see_members_sign_ins_failures_and_pauses() -> None:
    org, elsewhere = make_org("Acme"), make_org("Other")
    owner, _ = member_with_app(org, Role.OWNER, "owner@acme.example")
    member, _ = member_with_app(org, Role.VIEWER, "sam@acme.example")
    make_member(elsewhere, Role.OWNER, email="boss@other.example")
    client = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(6):  # five wrong, then refused while paused
        wrong_password(client, member.email)
    wrong_password(Client(REMOTE_ADDR="203.0.113.9"), "boss@other.example")
    r = Client(REMOTE_ADDR="192.0.2.1").post(LOGIN, {"login": owner.email, "password": PASSWORD})
    assert r["Location"] == reverse("mfa_authenticate")
    Client().post(LOGIN, {"login": "nobody@nowhere.example", "password": "x"})

    seen = [(e["action"], e["target"], e["ip"]) for e in audit_api(owner, org)]
    assert seen.count(("sign-in-failed", member.email, "198.51.100.7")) == 5
    assert ("sign-in-paused", member.email, "198.51.100.7") in seen
    # Another organization's member and addresses that are nobody's stay out of it.
    # (The token that reads them is in the log too.)
    assert {t for a, t, _ in seen if a != "token-created"} == {member.email}
    assert AuditEntry.objects.get(target="nobody@nowhere.example").org is None

    page = signed_in(owner).get(reverse("sign_in_activity")).content.decode()
    assert page.count("Wrong password") == 5
    assert "Refused: paused after too many wrong tries" in page
    assert re.search(r"paused for this account until \d\d:\d\d", page)
    assert "198.51.100.7" in page and "boss@other.example" not in page

    # A successful sign-in (password and code) is there too.
    member_client = Client(REMOTE_ADDR="192.0.2.60")
    fresh, fresh_secret = member_with_app(org, Role.VIEWER, "kim@acme.example")
    member_client.post(LOGIN, {"login": fresh.email, "password": PASSWORD})
    member_client.post(reverse("mfa_authenticate"), {"code": totp_now(fresh_secret)})
    page = signed_in(owner).get(reverse("sign_in_activity")).content.decode()
    assert "Signed in" in page and "192.0.2.60" in page


def test_only_admins_and_owners_open_the_sign_in_activity_page() -> None:
    org = make_org()
    viewer = make_member(org, Role.VIEWER)
    assert signed_in(viewer).get(reverse("sign_in_activity")).status_code == 403
    assert (
        signed_in(make_member(org, Role.ADMIN)).get(reverse("sign_in_activity")).status_code == 200
    )


def test_repeated_failures_for_one_account_alert_once_with_what_since_and_where_to_look() -> None:
    org = make_org("Acme")
    member, _ = member_with_app(org, Role.VIEWER, "sam@acme.example")
    with WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url("/in"))
        for i in range(ALERT_AFTER + 3):
            wrong_password(Client(REMOTE_ADDR=f"198.51.100.{i + 1}"), member.email)
        jobs.run_pending(kinds=["alerts.deliver"])
    [hook] = hooks.hooks
    assert hook.json["title"] == "Repeated failed sign-ins to sam@acme.example"
    body = hook.json["message"]
    first = AuditEntry.objects.filter(action="sign-in-failed").order_by("seq").first()
    assert first is not None
    assert f"{ALERT_AFTER} failed sign-in attempts to sam@acme.example since" in body
    assert f"{first.at:%Y-%m-%d %H:%M} UTC" in body
    assert "ask them to choose a new password" in body
    assert settings.SITE_ROOT + reverse("sign_in_activity") in body
    [alert] = AuditEntry.objects.filter(action="sign-in-alert")
    assert (alert.org, alert.target) == (org, member.email)
