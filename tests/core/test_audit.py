from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from onwatch.core import audit, keyring, keys
from onwatch.core.audit_head import Head, read_head
from onwatch.core.keyring import Keyring
from onwatch.core.models import AuditEntry

Capture = Callable[..., AbstractContextManager[Any]]
Write = Callable[..., AuditEntry]


@pytest.fixture(autouse=True)
def head_file(settings: Any, tmp_path: Path) -> Path:
    """Each test its own head file: the session's would name entries of other tests."""
    settings.AUDIT_HEAD_FILE = tmp_path / "audit-head.json"
    path: Path = settings.AUDIT_HEAD_FILE
    return path


@pytest.fixture
def write(django_capture_on_commit_callbacks: Capture) -> Write:
    """record() as it runs in onwatch: the head file moves when the entry commits."""

    def write_one(action: str = "thing", **kw: Any) -> AuditEntry:
        with django_capture_on_commit_callbacks(execute=True):
            return audit.record(action, **kw)

    return write_one


def raw_delete(*seqs: int) -> None:
    AuditEntry.objects.filter(seq__in=seqs)._raw_delete(AuditEntry.objects.db)


def unkeyed_rewrite(scheme: int, **change: Any) -> None:
    """What a database writer can do: change entries and recompute every hash the way the
    unkeyed chain computed them."""
    prev = audit.GENESIS
    for e in AuditEntry.objects.order_by("seq"):
        for name, value in change.items():
            setattr(e, name, value)
        new_hash = audit.entry_hash(prev, audit._fields(e))
        AuditEntry.objects.filter(pk=e.pk).update(
            prev_hash=prev, hash=new_hash, scheme=scheme, **change
        )
        prev = new_hash


def legacy_chain(n: int) -> None:
    """Entries as onwatch wrote them before the key: sha256 over the fields, no key."""
    prev = audit.GENESIS
    for seq in range(1, n + 1):
        e = AuditEntry(seq=seq, at=datetime(2026, 1, 1, 9, seq, tzinfo=UTC), action="old")
        e.actor, e.ip, e.data = "alice@example.com", "203.0.113.9", {"n": seq}
        e.scheme, e.prev_hash = 1, prev
        e.hash = prev = audit.entry_hash(prev, audit._fields(e))
        e.save()


@pytest.fixture
def before_the_key(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A key file from before the audit log was keyed: no marker in it."""
    settings.KEY_FILE = tmp_path / "keyring.json"
    Keyring.create(settings.KEY_FILE, audit_keyed=False)
    keyring.forget_keyring()
    yield settings.KEY_FILE
    keyring.forget_keyring()


def marked(key_file: Path) -> bool:
    return Keyring.load(key_file).audit_keyed


def raw_rows() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


@pytest.mark.django_db
def test_it_chains_entries_and_verifies_them(write: Write) -> None:
    for i in range(5):
        write(actor="tester", target=f"t{i}", n=i)
    verdict = audit.verify()
    assert verdict.ok and verdict.checked == 5
    first, second = AuditEntry.objects.order_by("seq")[:2]
    assert second.prev_hash == first.hash
    newest = AuditEntry.objects.get(seq=5)
    assert read_head() == Head(5, newest.hash)


@pytest.mark.django_db
def test_it_reports_the_first_changed_entry(write: Write) -> None:
    for i in range(5):
        write(actor="tester", target=f"t{i}")
    AuditEntry.objects.filter(seq=3).update(target="forged")
    verdict = audit.verify()
    assert verdict.first_bad == 3
    assert "changed" in verdict.reason


@pytest.mark.django_db
def test_it_reports_a_deleted_entry(write: Write) -> None:
    for i in range(4):
        write(actor="tester", target=f"t{i}")
    raw_delete(2)
    verdict = audit.verify()
    assert verdict.first_bad == 2
    assert "missing" in verdict.reason


@pytest.mark.django_db
def test_it_reports_deleted_newest_entries(write: Write) -> None:
    for i in range(5):
        write(actor="tester", target=f"t{i}")
    raw_delete(4, 5)
    verdict = audit.verify()
    assert not verdict.ok and verdict.first_bad == 4
    assert verdict.reason.startswith("entries 4 to 5 are missing from the end")
    assert "onwatch wrote up to entry 5; the log now ends at entry 3" in verdict.reason


@pytest.mark.django_db
def test_it_reports_a_chain_rewritten_without_the_key(write: Write) -> None:
    for i in range(3):
        write(actor="tester", target=f"t{i}")
    unkeyed_rewrite(scheme=2, actor="mallory")
    verdict = audit.verify()
    assert verdict.first_bad == 1
    assert verdict.reason == "entry 1 was changed after it was written"


@pytest.mark.django_db
def test_it_reports_a_chain_rewritten_as_old_unkeyed_entries(write: Write) -> None:
    # Passing the forgery off as entries from before the key: the key file says the log
    # has been keyed, so no unkeyed entry can be genuine.
    for i in range(3):
        write(actor="tester", target=f"t{i}")
    unkeyed_rewrite(scheme=1, actor="mallory")
    verdict = audit.verify()
    assert verdict.first_bad == 1
    assert verdict.reason == "entry 1 was changed after it was written"


@pytest.mark.django_db
def test_it_reports_a_chain_rewritten_as_old_unkeyed_entries_without_the_head_file(
    write: Write, head_file: Path
) -> None:
    for i in range(3):
        write(actor="tester", target=f"t{i}")
    unkeyed_rewrite(scheme=1, actor="mallory")
    head_file.unlink()
    verdict = audit.verify()
    assert verdict.first_bad == 1
    assert verdict.reason == "entry 1 was changed after it was written"


@pytest.mark.django_db
def test_without_the_marker_the_head_file_still_names_the_rewritten_entry(
    write: Write, before_the_key: Path
) -> None:
    for i in range(3):
        write(actor="tester", target=f"t{i}")
    unkeyed_rewrite(scheme=1, actor="mallory")
    verdict = audit.verify()
    assert verdict.first_bad == 3
    assert "the log was rewritten" in verdict.reason


@pytest.mark.django_db
def test_an_unkeyed_log_without_its_head_file_cannot_be_fully_checked(
    before_the_key: Path, head_file: Path
) -> None:
    # A machine that never wrote an entry (another PostgreSQL client, say) has no head
    # file: a log rewritten as old unkeyed entries must not pass as intact there.
    legacy_chain(3)
    verdict = audit.verify()
    assert not verdict.ok and verdict.first_bad is None
    assert f"the head file {head_file} is missing" in verdict.unchecked
    assert "the whole log rewritten" in verdict.unchecked


@pytest.mark.django_db
def test_it_does_not_pass_keyed_entries_without_their_head_file(
    write: Write, head_file: Path
) -> None:
    write(actor="tester")
    head_file.unlink()
    verdict = audit.verify()
    assert not verdict.ok and verdict.first_bad is None
    assert f"the head file {head_file} is missing" in verdict.unchecked


@pytest.mark.django_db
def test_the_head_does_not_move_past_a_replaced_entry(write: Write) -> None:
    # Someone deletes the newest entries and onwatch writes new ones in their place: the
    # head keeps naming the entry that was replaced, so the evidence does not vanish.
    for _ in range(3):
        write(actor="tester")
    raw_delete(3)
    for _ in range(3):
        write(actor="tester")
    head = read_head()
    assert head is not None and head.seq == 3
    assert "the log was rewritten" in audit.verify().reason


@pytest.mark.django_db
def test_entries_stay_verifiable_across_a_key_rotation(
    write: Write, settings: Any, tmp_path: Path
) -> None:
    settings.KEY_FILE = tmp_path / "keyring.json"
    ring = Keyring.create(settings.KEY_FILE)
    keyring.forget_keyring()
    try:
        write(actor="before")
        ring.add_key()
        ring.save()
        keyring.forget_keyring()
        write(actor="after")
        assert list(AuditEntry.objects.order_by("seq").values_list("key_id", flat=True)) == [1, 2]
        assert audit.verify().ok
        assert marked(settings.KEY_FILE)  # a rotation rewrites the key file and keeps the note
    finally:
        keyring.forget_keyring()


@pytest.mark.django_db
def test_erasing_a_person_keeps_the_chain_verifiable(write: Write) -> None:
    write("invite-created", actor="owner@example.com", target="alice@example.com", role="admin")
    signed_in = RequestFactory().get("/", REMOTE_ADDR="203.0.113.9")
    signed_in.user = AnonymousUser()
    write("signed-in", request=signed_in, actor="alice@example.com")
    write("member-removed", actor="bob@example.com", target="Alice Example", by="bob")
    write("job-started", actor="bob@example.com", job=4, email="ALICE@example.com")

    erased = audit.erase_person("alice@example.com", "Alice Example", "203.0.113.9", actor="o")

    assert erased == 4
    assert audit.verify().ok
    rows = raw_rows().casefold()
    assert "alice" not in rows and "203.0.113.9" not in rows
    job = AuditEntry.objects.get(seq=4)
    assert job.data == {"job": 4, "email": "(erased)"} and job.actor == "bob@example.com"
    last = AuditEntry.objects.order_by("seq").last()
    assert last is not None and (last.action, last.data) == ("personal-data-erased", {"entries": 4})


@pytest.mark.django_db
def test_erasing_matches_whole_names_and_addresses_only(write: Write) -> None:
    write(actor="a", address="10.0.0.1", note="Sent to al@example.com.")
    write(actor="b", address="10.0.0.12", note="Sent to val@example.com")
    assert audit.erase_person("10.0.0.1", "AL@example.com") == 1
    assert [e.data for e in AuditEntry.objects.order_by("seq")][:2] == [
        {"address": "(erased)", "note": "(erased)"},
        {"address": "10.0.0.12", "note": "Sent to val@example.com"},
    ]
    assert audit.verify().ok


@pytest.mark.django_db
def test_a_database_writer_cannot_pass_off_a_blanked_field_as_erased(write: Write) -> None:
    write(actor="mallory@example.com", target="prod database")
    e = AuditEntry.objects.get(seq=1)
    e.seals["actor"] = {"salt": None, "digest": e.seals["actor"]["digest"], "erased": "0" * 64}
    AuditEntry.objects.filter(seq=1).update(actor="(erased)", seals=e.seals)
    assert audit.verify().reason == "entry 1 was changed after it was written"


def test_erasing_needs_a_real_identifier() -> None:
    with pytest.raises(ValueError, match="3 characters or more"):
        audit.erase_person(" ", "al")


@pytest.mark.django_db
def test_entries_from_before_the_key_verify_and_are_sealed_once(
    write: Write, django_capture_on_commit_callbacks: Capture, before_the_key: Path
) -> None:
    legacy_chain(3)
    assert audit.verify(with_head=False).ok
    with django_capture_on_commit_callbacks(execute=True):
        assert audit.seal_legacy() == 3
    assert marked(before_the_key)
    assert audit.seal_legacy() == 0
    write(actor="new")
    assert set(AuditEntry.objects.values_list("scheme", flat=True)) == {2}
    assert audit.verify().ok
    # Sealed entries have what keyed ones have: a head that notices deletion, and erasure.
    with django_capture_on_commit_callbacks(execute=True):
        assert audit.erase_person("alice@example.com") == 3
    assert audit.verify().ok
    raw_delete(5)
    assert audit.verify().reason.startswith("entry 5 is missing from the end")


@pytest.mark.django_db
def test_an_upgraded_log_already_keyed_gets_the_marker_once(
    write: Write, django_capture_on_commit_callbacks: Capture, before_the_key: Path
) -> None:
    # Installed by a release that keyed the log but kept no marker: nothing to seal.
    write(actor="tester")
    with django_capture_on_commit_callbacks(execute=True) as marking:
        assert audit.seal_legacy() == 0
    assert marked(before_the_key) and len(marking) == 1
    with django_capture_on_commit_callbacks(execute=True) as again:
        audit.seal_legacy()
    assert again == []


@pytest.mark.django_db
def test_a_marked_key_file_never_lets_a_forgery_be_sealed(
    write: Write, head_file: Path, django_capture_on_commit_callbacks: Capture
) -> None:
    # The reviewer's attack: rewrite the log as old unkeyed entries, move the head file
    # away, and let `onwatch up` seal the forgery with the real key.
    for i in range(3):
        write(actor="tester", target=f"t{i}")
    unkeyed_rewrite(scheme=1, actor="mallory")
    head_file.unlink()
    with django_capture_on_commit_callbacks(execute=True):
        assert audit.seal_legacy() == 0
    assert set(AuditEntry.objects.values_list("scheme", flat=True)) == {1}
    assert not head_file.exists()
    assert audit.verify().reason == "entry 1 was changed after it was written"


@pytest.mark.django_db
def test_a_new_install_has_the_marker_from_the_start(settings: Any, tmp_path: Path) -> None:
    settings.KEY_FILE = tmp_path / "keyring.json"
    try:
        keys.ensure_keyring()
        assert marked(settings.KEY_FILE)
    finally:
        keyring.forget_keyring()


@pytest.mark.django_db
def test_a_key_file_made_for_an_unkeyed_log_waits_for_the_sealing(
    settings: Any, tmp_path: Path
) -> None:
    legacy_chain(2)
    settings.KEY_FILE = tmp_path / "keyring.json"
    try:
        keys.ensure_keyring()
        assert not marked(settings.KEY_FILE)
    finally:
        keyring.forget_keyring()


@pytest.mark.django_db
def test_old_entries_followed_by_keyed_ones_are_left_unmarked(
    write: Write, django_capture_on_commit_callbacks: Capture, before_the_key: Path
) -> None:
    # A worker of the new release wrote before `onwatch migrate` sealed: marking now would
    # make the old entries look forged, so the log keeps relying on its head file.
    legacy_chain(2)
    write(actor="new")
    with django_capture_on_commit_callbacks(execute=True):
        assert audit.seal_legacy() == 0
    assert not marked(before_the_key)
    assert audit.verify().ok


@pytest.mark.django_db
def test_a_broken_chain_from_before_the_key_is_left_as_evidence(before_the_key: Path) -> None:
    legacy_chain(3)
    AuditEntry.objects.filter(seq=2).update(actor="mallory")
    assert audit.seal_legacy() == 0
    assert set(AuditEntry.objects.values_list("scheme", flat=True)) == {1}
    assert audit.verify().reason == "entry 2 was changed after it was written"
    assert not marked(before_the_key)


@pytest.mark.django_db
def test_accepting_a_restored_log_does_not_pass_a_changed_entry(
    write: Write, head_file: Path
) -> None:
    for _ in range(3):
        write(actor="tester")
    AuditEntry.objects.filter(seq=2).update(actor="mallory")
    with pytest.raises(ValueError, match="entry 2 was changed after it was written"):
        audit.accept_restored()
    assert read_head() == Head(3, AuditEntry.objects.get(seq=3).hash)


@pytest.mark.django_db
def test_entries_cannot_be_edited_or_deleted_through_the_model() -> None:
    e = audit.record("thing", actor="tester")
    e.target = "changed"
    with pytest.raises(ValueError, match="append-only"):
        e.save()
    with pytest.raises(ValueError, match="append-only"):
        e.delete()
