"""One write path: API tokens and members changed on their pages or by code that calls the
same functions (scripts, set-up code) leave the same rows and the same audit entry; only
the actor's address tells them apart."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from onwatch.core.models import ApiToken, AuditEntry, Membership
from onwatch.core.services import change_role, issue_token, revoke_token
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

CLIENT_IP = "127.0.0.1"


def last_entry(action: str) -> dict[str, Any]:
    e = AuditEntry.objects.filter(action=action).order_by("-seq").first()
    assert e is not None, f"no {action!r} entry"
    return {"org": e.org_id, "actor": e.actor, "ip": e.ip, "target": e.target, "data": e.data}


def token_row(token: ApiToken) -> dict[str, Any]:
    token.refresh_from_db()
    return {
        "user": token.user_id,
        "org": token.org_id,
        "name": token.name,
        "scopes": token.scopes,
        "expires_on": token.expires_at.date(),
        "revoked": token.revoked_at is not None,
    }


def without_prefix(entry: dict[str, Any], token: ApiToken) -> dict[str, Any]:
    """The entry with what differs between two tokens by nature: its prefix and expiry."""
    target = entry["target"].replace(token.prefix, "<prefix>")
    return entry | {"target": target, "data": entry["data"] | {"expires": "<expiry>"}}


def test_a_token_made_and_revoked_on_its_page_or_by_code_is_the_same(
    members: dict[str, Any],
) -> None:
    admin = members["admin"]
    org = Membership.objects.get(user=admin).org
    page = signed_in(admin)
    form = {"name": "ci", "scopes": ["jobs:read", "audit:read"], "days": 30}
    assert page.post(reverse("tokens"), form).status_code == 200
    on_page = ApiToken.objects.get(name="ci")
    made_on_page = without_prefix(last_entry("token-created"), on_page)
    assert page.post(reverse("token_revoke", args=[on_page.pk])).status_code == 302
    revoked_on_page = last_entry("token-revoked")

    by_code = issue_token(admin, org, "ci", ["jobs:read", "audit:read"], 30).token
    made_by_code = without_prefix(last_entry("token-created"), by_code)
    assert revoke_token(by_code)
    revoked_by_code = last_entry("token-revoked")

    assert token_row(by_code) == token_row(on_page)
    assert token_row(on_page)["scopes"] == ["audit:read", "jobs:read"]
    assert made_on_page == made_by_code | {"ip": CLIENT_IP}
    assert made_on_page == {
        "org": org.pk,
        "actor": admin.email,
        "ip": CLIENT_IP,
        "target": "ci (<prefix>)",
        "data": {"scopes": ["audit:read", "jobs:read"], "expires": "<expiry>"},
    }
    assert revoked_on_page == revoked_by_code | {
        "ip": CLIENT_IP,
        "target": f"ci ({on_page.prefix})",
    }
    assert revoked_by_code["actor"] == admin.email and revoked_by_code["ip"] == ""
    assert revoked_by_code["target"] == f"ci ({by_code.prefix})"


def test_a_role_changed_on_the_members_page_or_by_code_is_the_same(
    members: dict[str, Any],
) -> None:
    admin, viewer = members["admin"], members["viewer"]
    me, them = (Membership.objects.get(user=u) for u in (admin, viewer))
    page = signed_in(admin)
    assert (
        page.post(reverse("member_role", args=[them.pk]), {"role": "deployer"}).status_code == 302
    )
    on_page = last_entry("member-role-changed")
    assert Membership.objects.get(pk=them.pk).role == "deployer"

    them.refresh_from_db()
    assert change_role(me, them, "viewer") == "deployer"
    back = last_entry("member-role-changed")
    assert Membership.objects.get(pk=them.pk).role == "viewer"

    assert on_page == {
        "org": me.org_id,
        "actor": admin.email,
        "ip": CLIENT_IP,
        "target": viewer.email,
        "data": {"was": "viewer", "now": "deployer"},
    }
    assert back == on_page | {"ip": "", "data": {"was": "deployer", "now": "viewer"}}
    # Unchanged is no change: no entry.
    assert change_role(me, them, "viewer") == "viewer"
    assert AuditEntry.objects.filter(action="member-role-changed").count() == 2
