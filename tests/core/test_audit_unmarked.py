"""A key file that cannot take the keyed mark does not stop onwatch, and never lets the
audit log pass as fully checked: the audit page and verify say why and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from onwatch.core import audit, keyring
from onwatch.core.keyring import Keyring
from onwatch.core.models import Membership
from tests.support.fixtures import signed_in
from tests.support.folders import unwritable

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def unmarked_key_file(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A key file in its own folder, without the keyed mark (as from the release before it)."""
    settings.KEY_FILE = tmp_path / "keys" / "keyring.json"
    Keyring.create(settings.KEY_FILE, audit_keyed=False)
    keyring.forget_keyring()
    yield settings.KEY_FILE
    keyring.forget_keyring()


def test_the_audit_page_and_verify_say_the_key_file_could_not_be_marked(
    members: dict[str, Any],
    unmarked_key_file: Path,
    settings: Any,
    tmp_path: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.AUDIT_HEAD_FILE = tmp_path / "audit-head.json"  # this test's own
    org = Membership.objects.get(user=members["admin"]).org
    folder = unmarked_key_file.parent
    with django_capture_on_commit_callbacks(execute=True):
        audit.record("thing", actor="alice", org=org)
    with unwritable(folder):
        with django_capture_on_commit_callbacks(execute=True):
            audit.mark_keyed_or_note()  # what `onwatch migrate` does once the log is sealed
        verdict = audit.verify()
        body = signed_in(members["admin"]).get(reverse("audit_log")).content.decode()
    assert not Keyring.load(unmarked_key_file).audit_keyed
    why = f"because its folder {folder} does not let onwatch write there"
    assert not verdict.ok and verdict.first_bad is None and why in verdict.unchecked
    assert "Not fully checked: the key file" in body and why in body
    assert f"Fix: let onwatch write to {folder}, then run `onwatch migrate` once" in body
    # Once it can write, the mark is made and the warning goes.
    with django_capture_on_commit_callbacks(execute=True):
        audit.mark_keyed_or_note()
    assert Keyring.load(unmarked_key_file).audit_keyed
    assert audit.verify().ok
    assert (
        "Not fully checked"
        not in signed_in(members["admin"]).get(reverse("audit_log")).content.decode()
    )
