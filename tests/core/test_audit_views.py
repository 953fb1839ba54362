"""The audit log page: owners and admins read their organization's entries, newest first."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from onwatch.core import audit
from onwatch.core.models import Membership
from onwatch.core.views import AUDIT_PAGE_SIZE
from tests.support.fixtures import make_org, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_admins_read_their_organizations_entries_newest_first(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["admin"]).org
    audit.record("first-thing", actor="alice", org=org, target="one", detail="x")
    audit.record("second-thing", actor="bob", org=org, target="two")
    audit.record("their-thing", actor="mallory", org=make_org("Other"), target="secret")
    for role in ("owner", "admin"):
        r = signed_in(members[role]).get(reverse("audit_log"))
        assert r.status_code == 200
        body = r.content.decode()
        assert body.index("second-thing") < body.index("first-thing")
        assert "detail=x" in body and "alice" in body
        assert "their-thing" not in body and "mallory" not in body


@pytest.mark.parametrize("role", ["deployer", "viewer"])
def test_deployers_and_viewers_may_not_read_it(members: dict[str, Any], role: str) -> None:
    r = signed_in(members[role]).get(reverse("audit_log"))
    assert r.status_code == 403
    assert "Read the audit log" in r.content.decode()


def test_it_is_paginated(members: dict[str, Any]) -> None:
    org = Membership.objects.get(user=members["owner"]).org
    # Signing in is itself an entry of the organization's log: before the steps counted.
    client = signed_in(members["owner"])
    total = AUDIT_PAGE_SIZE + 7
    for i in range(total):
        audit.record("step", actor="tester", org=org, target=f"n{i:03d}")
    first = client.get(reverse("audit_log")).content.decode()
    assert f"n{total - 1:03d}" in first and "n006" not in first
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    second = client.get(reverse("audit_log") + "?page=2").content.decode()
    assert [f"n{i:03d}" in second for i in range(8)] == [True] * 7 + [False]
    # A page past the end shows the last one rather than an error.
    assert "Page 2 of 2" in client.get(reverse("audit_log") + "?page=99").content.decode()


def test_the_nav_shows_the_audit_log_only_to_those_who_may_read_it(
    members: dict[str, Any],
) -> None:
    url = reverse("audit_log")
    assert f'href="{url}"' in signed_in(members["admin"]).get("/").content.decode()
    assert f'href="{url}"' not in signed_in(members["deployer"]).get("/").content.decode()
