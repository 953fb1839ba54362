from __future__ import annotations

import json
from pathlib import Path

import pytest

from onwatch.core.keyring import Keyring, KeyringError

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_it_creates_a_key_file_readable_only_by_its_owner(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "keys.json")
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert ring.current == 1


def test_it_refuses_to_overwrite_an_existing_key_file(tmp_path: Path) -> None:
    Keyring.create(tmp_path / "keys.json")
    before = (tmp_path / "keys.json").read_text()
    with pytest.raises(FileExistsError):
        Keyring.create(tmp_path / "keys.json")
    assert (tmp_path / "keys.json").read_text() == before


def test_it_round_trips_and_binds_the_column(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "keys.json")
    token = ring.encrypt("s3cret", "alerts.channel.url")
    assert "s3cret" not in token
    assert ring.decrypt(token, "alerts.channel.url") == "s3cret"
    with pytest.raises(KeyringError, match="does not match"):
        ring.decrypt(token, "core.keycheck.value")


def test_old_keys_still_decrypt_after_a_new_key(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "keys.json")
    old = ring.encrypt("first", "ctx")
    ring.add_key()
    ring.save()
    reloaded = Keyring.load(tmp_path / "keys.json")
    assert reloaded.current == 2
    assert reloaded.decrypt(old, "ctx") == "first"
    assert reloaded.key_id_of(reloaded.encrypt("x", "ctx")) == 2


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="missing; restore it"):
        Keyring.load(tmp_path / "nope.json")


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text('{"keys": {"1": "not base64!"}, "current": 1}')
    with pytest.raises(KeyringError, match="damaged"):
        Keyring.load(tmp_path / "k.json")


def test_a_different_key_file_cannot_decrypt(tmp_path: Path) -> None:
    token = Keyring.create(tmp_path / "a.json").encrypt("x", "ctx")
    other = Keyring.create(tmp_path / "b.json")
    with pytest.raises(KeyringError, match="does not match this database"):
        other.decrypt(token, "ctx")


def test_save_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    ring = Keyring.create(tmp_path / "k.json")
    ring.add_key()
    ring.save()
    doc = json.loads((tmp_path / "k.json").read_text())
    assert sorted(doc["keys"]) == ["1", "2"]
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]
