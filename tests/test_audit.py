from __future__ import annotations

import pytest

from onwatch.core import audit
from onwatch.core.models import AuditEntry


@pytest.mark.django_db
def test_it_chains_entries_and_verifies_them() -> None:
    for i in range(5):
        audit.record("thing", actor="tester", target=f"t{i}", n=i)
    verdict = audit.verify()
    assert verdict.ok and verdict.checked == 5
    first, second = AuditEntry.objects.order_by("seq")[:2]
    assert second.prev_hash == first.hash


@pytest.mark.django_db
def test_it_reports_the_first_changed_entry() -> None:
    for i in range(5):
        audit.record("thing", actor="tester", target=f"t{i}")
    AuditEntry.objects.filter(seq=3).update(target="forged")
    verdict = audit.verify()
    assert verdict.first_bad == 3
    assert "changed" in verdict.reason


@pytest.mark.django_db
def test_it_reports_a_deleted_entry() -> None:
    for i in range(4):
        audit.record("thing", actor="tester", target=f"t{i}")
    AuditEntry.objects.filter(seq=2)._raw_delete(AuditEntry.objects.db)
    verdict = audit.verify()
    assert verdict.first_bad == 2
    assert "missing" in verdict.reason


@pytest.mark.django_db
def test_entries_cannot_be_edited_or_deleted_through_the_model() -> None:
    e = audit.record("thing", actor="tester")
    e.target = "changed"
    with pytest.raises(ValueError, match="append-only"):
        e.save()
    with pytest.raises(ValueError, match="append-only"):
        e.delete()
