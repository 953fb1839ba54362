"""The check asked again while a long answer (a live log stream) stays open: the same
session, still a member, and a role that still holds the permission."""

from __future__ import annotations

from typing import Any

import pytest

from onwatch.core import access
from onwatch.core.models import Membership, Organization
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def test_a_lowered_role_no_longer_holds_what_it_lost(
    org: Organization, members: dict[str, Any]
) -> None:
    deployer = members["deployer"]
    key = signed_in(deployer).session.session_key
    assert access.still_allowed(key, deployer.pk, org.pk, "channels.test")
    Membership.objects.filter(org=org, user=deployer).update(role="viewer")
    assert not access.still_allowed(key, deployer.pk, org.pk, "channels.test")
    assert access.still_allowed(key, deployer.pk, org.pk, "jobs.view")
    Membership.objects.filter(org=org, user=deployer).delete()
    assert not access.still_allowed(key, deployer.pk, org.pk, "jobs.view")


def test_a_session_ended_by_sign_out_or_a_new_password_no_longer_counts(
    org: Organization, members: dict[str, Any]
) -> None:
    viewer = members["viewer"]
    client = signed_in(viewer)
    key = client.session.session_key
    assert access.still_signed_in(key, viewer.pk)
    assert not access.still_signed_in(key, members["admin"].pk)  # someone else's session
    viewer.set_password("a new password for sure")
    viewer.save()
    assert not access.still_signed_in(key, viewer.pk)
    other = signed_in(viewer)
    other_key = other.session.session_key
    assert access.still_signed_in(other_key, viewer.pk)
    other.logout()
    assert not access.still_signed_in(other_key, viewer.pk)
    assert not access.still_signed_in(None, viewer.pk)
