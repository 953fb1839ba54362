"""One-time invite links: the owner's creates the organization, a member's joins one; both
lead straight to second-factor enrolment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from onwatch.core.models import AuditEntry, Invite, Membership, Organization
from onwatch.core.roles import Role
from tests.support.fixtures import make_org

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "plum kettle orbit 58"


def form(**overrides: str) -> dict[str, str]:
    data = {
        "org_name": "Pelican Bakery",
        "email": "Ada@Pelican.example",
        "password": GOOD_PASSWORD,
        "password_again": GOOD_PASSWORD,
    }
    data.update(overrides)
    return data


def invite_url(role: str = Role.OWNER, org: Organization | None = None, **kw: Any) -> str:
    _, token = Invite.issue(role, org, **kw)
    return reverse("invite", args=[token])


def test_the_owner_invite_creates_the_organization_and_owner_then_asks_for_mfa() -> None:
    url = invite_url()
    client = Client()
    page = client.get(url)
    assert page.status_code == 200
    assert "Organization name" in page.content.decode()
    r = client.post(url, form())
    assert r["Location"] == reverse("mfa_activate_totp")
    user = get_user_model().objects.get()
    assert (user.email, user.is_staff, user.is_superuser) == ("ada@pelican.example", True, True)
    assert user.password.startswith("argon2$argon2id$")
    m = Membership.objects.get(user=user)
    assert (m.role, m.org.name) == (Role.OWNER, "Pelican Bakery")
    # Enrolment opens without asking for the password just typed; nothing else opens.
    assert client.get(reverse("mfa_activate_totp")).status_code == 200
    assert client.get("/")["Location"] == reverse("mfa_activate_totp")
    assert {"org-created", "member-added"} <= set(
        AuditEntry.objects.values_list("action", flat=True)
    )


def test_a_member_invite_joins_the_inviting_organization() -> None:
    org = make_org("Harbor")
    url = invite_url(Role.DEPLOYER, org)
    client = Client()
    page = client.get(url)
    assert "Organization name" not in page.content.decode()
    r = client.post(url, form(org_name="ignored"))
    assert r["Location"] == reverse("mfa_activate_totp")
    m = Membership.objects.get(user__email="ada@pelican.example")
    assert (m.org, m.role) == (org, Role.DEPLOYER)
    assert not m.user.is_staff
    assert Organization.objects.count() == 1


def test_a_used_link_is_gone() -> None:
    url = invite_url()
    assert Client().post(url, form())["Location"] == reverse("mfa_activate_totp")
    again = Client()
    gone = again.get(url)
    assert gone.status_code == 404
    assert "has been used or has expired; ask whoever sent it" in gone.content.decode()
    assert again.post(url, form(email="eve@pelican.example")).status_code == 404
    assert get_user_model().objects.count() == 1


def test_an_expired_link_is_gone() -> None:
    invite, token = Invite.issue(Role.OWNER, None)
    Invite.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    url = reverse("invite", args=[token])
    assert Client().get(url).status_code == 404
    assert Client().post(url, form()).status_code == 404
    assert not get_user_model().objects.exists()


def test_an_unknown_link_is_gone() -> None:
    assert Client().get(reverse("invite", args=["no-such-token"])).status_code == 404


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("password1234", "This password is too common."),
        ("kettle7", "This password is too short. It must contain at least 12 characters."),
        ("804215937761", "This password is entirely numeric."),
    ],
)
def test_a_weak_password_is_refused_with_a_clear_message(password: str, message: str) -> None:
    url = invite_url()
    r = Client().post(url, form(password=password, password_again=password))
    assert r.status_code == 200
    assert message in r.content.decode()
    assert not get_user_model().objects.exists()
    assert not Organization.objects.exists()
    assert Invite.objects.get().usable


def test_two_different_passwords_are_refused() -> None:
    r = Client().post(invite_url(), form(password_again=GOOD_PASSWORD + "x"))
    assert "The two passwords differ." in r.content.decode()
    assert not get_user_model().objects.exists()


def test_the_set_up_link_is_void_once_an_owner_exists() -> None:
    # Printed by `onwatch up` on first run, it may linger in a log someone reads later.
    first, later = invite_url(), invite_url()
    assert Client().post(first, form())["Location"] == reverse("mfa_activate_totp")
    assert Client().get(later).status_code == 404
    assert Client().post(later, form(email="eve@pelican.example")).status_code == 404
    assert get_user_model().objects.count() == 1
    assert Organization.objects.count() == 1
