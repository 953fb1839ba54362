"""The members page: invites shown once, role changes within the rules, every change audited."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from onwatch.core.models import ApiToken, AuditEntry, Invite, Membership, hash_token
from onwatch.core.roles import Role, role_change_refusal
from onwatch.core.services import MemberError, change_role, issue_token, remove_member
from tests.support.fixtures import make_member, make_org, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def membership(user: Any) -> Membership:
    return Membership.objects.select_related("org", "user").get(user=user)


def set_role(client: Client, user: Any, role: str) -> Any:
    return client.post(reverse("member_role", args=[membership(user).pk]), {"role": role})


def test_viewer_sees_members_and_roles_without_controls(members: dict[str, Any]) -> None:
    r = signed_in(members["viewer"]).get(reverse("members"))
    assert r.status_code == 200
    body = r.content.decode()
    for user in members.values():
        assert user.email in body
    assert "Deployer" in body and "Owner" in body
    assert reverse("member_invite") not in body
    assert reverse("member_remove", args=[membership(members["deployer"]).pk]) not in body


def test_admin_makes_an_invite_link_that_is_shown_once_and_works(
    members: dict[str, Any],
) -> None:
    admin = signed_in(members["admin"])
    r = admin.post(reverse("member_invite"), {"role": "deployer", "email": "new@acme.example"})
    assert r.status_code == 200
    found = re.search(r"/invite/([A-Za-z0-9_-]{40,})/", r.content.decode())
    assert found, "the invite link is on the page"
    raw = found.group(1)
    invite = Invite.objects.get()
    assert invite.token_hash == hash_token(raw) and invite.role == "deployer"
    assert invite.org == membership(members["admin"]).org
    # Only the hash is kept, so the members page cannot show the link again.
    assert raw not in admin.get(reverse("members")).content.decode()
    entry = AuditEntry.objects.get(action="invite-created")
    assert entry.actor == members["admin"].email and entry.data == {"role": "deployer"}
    assert raw not in str(entry.data) + entry.target
    # The link itself is accepted by the invite page, by someone not signed in.
    assert Client().get(f"/invite/{raw}/").status_code == 200


def test_only_owners_invite_owners(members: dict[str, Any]) -> None:
    r = signed_in(members["admin"]).post(reverse("member_invite"), {"role": "owner"})
    assert r.status_code == 200
    assert "Select a valid choice" in r.content.decode()
    assert not Invite.objects.exists()
    r = signed_in(members["owner"]).post(reverse("member_invite"), {"role": "owner"})
    assert Invite.objects.get().role == "owner"


def test_admin_changes_a_role_and_it_is_audited(members: dict[str, Any]) -> None:
    r = set_role(signed_in(members["admin"]), members["viewer"], "deployer")
    assert r.status_code == 302
    assert membership(members["viewer"]).role == "deployer"
    entry = AuditEntry.objects.get(action="member-role-changed")
    assert entry.target == members["viewer"].email
    assert entry.data == {"was": "viewer", "now": "deployer"}


def test_admin_cannot_make_or_demote_owners(members: dict[str, Any]) -> None:
    admin = signed_in(members["admin"])
    set_role(admin, members["deployer"], "owner")
    assert membership(members["deployer"]).role == "deployer"
    r = set_role(admin, members["owner"], "viewer")
    assert membership(members["owner"]).role == "owner"
    assert "Only an owner can make or remove owners" in admin.get(r["Location"]).content.decode()
    admin.post(reverse("member_remove", args=[membership(members["owner"]).pk]))
    assert Membership.objects.filter(user=members["owner"]).exists()
    assert not AuditEntry.objects.filter(action__startswith="member-").exists()


def test_deployer_cannot_change_roles(members: dict[str, Any]) -> None:
    r = set_role(signed_in(members["deployer"]), members["viewer"], "admin")
    assert r.status_code == 403
    assert membership(members["viewer"]).role == "viewer"


def test_nobody_changes_their_own_role(members: dict[str, Any]) -> None:
    admin = signed_in(members["admin"])
    r = set_role(admin, members["admin"], "viewer")
    assert membership(members["admin"]).role == "admin"
    assert "Nobody changes their own role" in admin.get(r["Location"]).content.decode()
    admin.post(reverse("member_remove", args=[membership(members["admin"]).pk]))
    assert Membership.objects.filter(user=members["admin"]).exists()


def test_owner_promotes_to_owner_granting_the_admin_and_demoting_takes_it_away(
    members: dict[str, Any],
) -> None:
    owner = signed_in(members["owner"])
    set_role(owner, members["admin"], "owner")
    members["admin"].refresh_from_db()
    assert membership(members["admin"]).role == "owner"
    assert members["admin"].is_staff and members["admin"].is_superuser
    set_role(owner, members["admin"], "viewer")
    members["admin"].refresh_from_db()
    assert membership(members["admin"]).role == "viewer"
    assert not members["admin"].is_staff and not members["admin"].is_superuser


def test_the_last_owner_cannot_be_demoted_or_removed() -> None:
    # Only an owner can touch an owner and nobody touches themselves, so through the page
    # the last owner is only ever reached by a race: the rule stands behind it.
    assert role_change_refusal("owner", "owner", "admin", is_self=False, owners=1)
    assert role_change_refusal("owner", "owner", None, is_self=False, owners=1)
    assert role_change_refusal("owner", "owner", "admin", is_self=False, owners=2) is None


def test_two_owners_demoting_each_other_leave_one_owner() -> None:
    org = make_org()
    a, b = make_member(org, "owner", "a@acme.example"), make_member(org, "owner", "b@acme.example")
    ma, mb = membership(a), membership(b)
    change_role(ma, mb, "admin")
    # b's request read its membership before a's change landed: the stale "owner" in
    # memory must not count.
    with pytest.raises(MemberError, match="Only an owner"):
        change_role(mb, ma, "admin")
    assert Membership.objects.filter(org=org, role=Role.OWNER).count() == 1


def test_removing_a_member_revokes_their_tokens_and_is_audited(members: dict[str, Any]) -> None:
    m = membership(members["deployer"])
    issued = issue_token(members["deployer"], m.org, "ci", ["jobs:read"], 30)
    r = signed_in(members["admin"]).post(reverse("member_remove", args=[m.pk]))
    assert r.status_code == 302
    assert not Membership.objects.filter(pk=m.pk).exists()
    assert ApiToken.objects.get(pk=issued.token.pk).revoked_at is not None
    members["deployer"].refresh_from_db()
    assert not members["deployer"].is_active
    entry = AuditEntry.objects.get(action="member-removed")
    assert entry.target == members["deployer"].email and entry.data == {"role": "deployer"}
    assert signed_in(members["deployer"]).get(reverse("dashboard")).status_code != 200


def test_members_of_another_organization_are_out_of_reach(members: dict[str, Any]) -> None:
    stranger = make_member(make_org("Other"), "viewer")
    r = set_role(signed_in(members["owner"]), stranger, "admin")
    assert r.status_code == 404
    assert membership(stranger).role == "viewer"


def test_remove_member_refuses_without_the_page_too(members: dict[str, Any]) -> None:
    with pytest.raises(MemberError, match="cannot change members"):
        remove_member(membership(members["deployer"]), membership(members["viewer"]))


def test_admins_get_no_controls_on_owners_rows(members: dict[str, Any]) -> None:
    owner_row = reverse("member_remove", args=[membership(members["owner"]).pk])
    admin_row = reverse("member_remove", args=[membership(members["admin"]).pk])
    viewer_row = reverse("member_remove", args=[membership(members["viewer"]).pk])
    as_admin = signed_in(members["admin"]).get(reverse("members")).content.decode()
    assert owner_row not in as_admin and viewer_row in as_admin
    assert admin_row not in as_admin  # their own row
    as_owner = signed_in(members["owner"]).get(reverse("members")).content.decode()
    assert admin_row in as_owner and owner_row not in as_owner
    assert '<option value="owner"' in as_owner and '<option value="owner"' not in as_admin
