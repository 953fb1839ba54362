"""API tokens: shown once, stored hashed, scoped no wider than the role, revocable."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from onwatch.core.models import ApiToken, AuditEntry, Membership
from onwatch.core.services import issue_token
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

RAW = re.compile(r"ow_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


def create(client: Client, **fields: Any) -> Any:
    data = {"name": "ci", "scopes": ["jobs:read"], "days": 90} | fields
    return client.post(reverse("tokens"), data)


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(members: dict[str, Any]) -> None:
    client = signed_in(members["deployer"])
    r = create(client, name="ci status", scopes=["jobs:read", "channels:read"])
    assert r.status_code == 200
    found = RAW.search(r.content.decode())
    assert found, "the raw token is on the page"
    raw = found.group(0)
    token = ApiToken.objects.get()
    assert token.prefix == found.group(1)
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.scopes == ["channels:read", "jobs:read"]
    assert token.user == members["deployer"]
    assert raw not in client.get(reverse("tokens")).content.decode()
    # It works, and says so in the list.
    api = Client().get("/api/v1/jobs/", headers={"authorization": f"Bearer {raw}"})
    assert api.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_the_secret_carries_256_random_bits(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["owner"]).org
    raws = [issue_token(members["owner"], org, f"t{i}", ["jobs:read"], 1).raw for i in range(20)]
    for raw in raws:
        assert raw.startswith("ow_")
        secret = raw.split("_", 2)[2]
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert len({r.split("_", 2)[2] for r in raws}) == 20
    assert len({r.split("_", 2)[1] for r in raws}) == 20


def test_expiry_defaults_to_the_setting_and_can_be_chosen(members: dict[str, Any]) -> None:
    client = signed_in(members["viewer"])
    page = client.get(reverse("tokens")).content.decode()
    assert f'value="{settings.API_TOKEN_DEFAULT_DAYS}"' in page
    create(client, days=settings.API_TOKEN_DEFAULT_DAYS)
    create(client, name="short", days=7)
    default, short = ApiToken.objects.order_by("id")
    for token, days in ((default, 90), (short, 7)):
        left = token.expires_at - timezone.now()
        assert timedelta(days=days) - timedelta(minutes=1) < left <= timedelta(days=days)


def test_scopes_are_limited_to_what_the_role_holds(members: dict[str, Any]) -> None:
    client = signed_in(members["viewer"])
    page = client.get(reverse("tokens")).content.decode()
    assert 'value="jobs:read"' in page and 'value="audit:read"' not in page
    r = create(client, scopes=["audit:read"])
    assert "Select a valid choice" in r.content.decode()
    assert not ApiToken.objects.exists()
    r = create(client, scopes=[])
    assert "Pick at least one scope" in r.content.decode()


def test_creation_and_revocation_are_audited_and_revoked_tokens_stop(
    members: dict[str, Any],
) -> None:
    client = signed_in(members["admin"])
    raw = RAW.search(create(client, scopes=["audit:read"]).content.decode()).group(0)  # type: ignore[union-attr]
    token = ApiToken.objects.get()
    created = AuditEntry.objects.get(action="token-created")
    assert created.actor == members["admin"].email
    assert created.target == f"ci ({token.prefix})" and created.data["scopes"] == ["audit:read"]
    assert raw not in str(created.data) + created.target
    r = client.post(reverse("token_revoke", args=[token.pk]))
    assert r.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEntry.objects.filter(action="token-revoked", target=f"ci ({token.prefix})").exists()
    api = Client().get("/api/v1/audit/", headers={"authorization": f"Bearer {raw}"})
    assert api.status_code == 401
    # Revoking twice records nothing more.
    client.post(reverse("token_revoke", args=[token.pk]))
    assert AuditEntry.objects.filter(action="token-revoked").count() == 1


def test_people_see_and_revoke_only_their_own_tokens(members: dict[str, Any]) -> None:
    owner = members["owner"]
    org = Membership.objects.get(user=owner).org
    theirs = issue_token(owner, org, "owner's backup script", ["jobs:read"], 30).token
    viewer = signed_in(members["viewer"])
    assert "owner&#x27;s backup script" not in viewer.get(reverse("tokens")).content.decode()
    assert viewer.post(reverse("token_revoke", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert "owner&#x27;s backup script" in signed_in(owner).get(reverse("tokens")).content.decode()


def test_the_list_shows_prefix_scopes_expiry_and_last_use(members: dict[str, Any]) -> None:
    user = members["deployer"]
    org = Membership.objects.get(user=user).org
    t = issue_token(user, org, "deploy hook", ["jobs:read", "channels:test"], 30).token
    ApiToken.objects.filter(pk=t.pk).update(last_used_at=timezone.now())
    page = signed_in(user).get(reverse("tokens")).content.decode()
    assert "deploy hook" in page and f"ow_{t.prefix}_" in page
    assert "channels:test, jobs:read" in page
    assert t.expires_at.strftime("%Y-%m-%d") in page
    assert "<td>never</td>" not in page
    unused = issue_token(user, org, "spare", ["jobs:read"], 30).token
    page = signed_in(user).get(reverse("tokens")).content.decode()
    assert f"ow_{unused.prefix}_" in page and page.count("<td>never</td>") == 1
