"""targets.stream_into, the `restic dump | loader` pipe, with the real restic: a loader that
gives up early is reported in its own words, not as restic's broken pipe."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from onwatch.backups import mariadb, restic, targets
from tests.support.backups import TEMPLATE_PASSWORD, backup_text, repo_template

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

GIVE_UP = ["sh", "-c", "echo 'ERROR: the disk is full' >&2; exit 3"]


def repo_with_a_big_dump(tmp_path: Path) -> tuple[restic.Repo, restic.Snapshot]:
    shutil.copytree(repo_template(), tmp_path / "repo")
    repo = restic.Repo(str(tmp_path / "repo"), TEMPLATE_PASSWORD, tmp_path / "cache")
    # Far more than a pipe holds: restic is still writing when the loader exits.
    backup_text(repo, os.urandom(2 << 20), ["big"])
    [snap] = restic.snapshots(repo, ["big"])
    return repo, snap


@pytest.mark.parametrize("rewrite", [None, mariadb.switch_off_events], ids=["pipe", "relay"])
def test_a_loader_that_gives_up_early_is_reported_in_its_own_words(
    tmp_path: Path, rewrite: targets.Rewrite | None
) -> None:
    repo, snap = repo_with_a_big_dump(tmp_path)
    with pytest.raises(targets.RestoreFailed) as failed:
        targets.stream_into(
            repo, snap, GIVE_UP, dict(os.environ), "loader", lambda lines: lines[-1], rewrite
        )
    assert str(failed.value) == "loader exited with status 3 (ERROR: the disk is full)"


def test_the_relay_hands_every_byte_through_in_whole_lines(tmp_path: Path) -> None:
    repo, snap = repo_with_a_big_dump(tmp_path)
    seen: list[bytes] = []

    def keep(lines: bytes) -> bytes:
        seen.append(lines)
        return lines

    out = tmp_path / "out"
    targets.stream_into(
        repo, snap, ["sh", "-c", f"cat > {out}"], dict(os.environ), "cat", str, keep
    )
    restored = out.read_bytes()
    assert len(restored) == 2 << 20 and b"".join(seen) == restored
    assert all(block.endswith(b"\n") for block in seen[:-1])


EVENT = (
    "/*!50106 CREATE*/ /*!50117 DEFINER=`u`@`%`*/ /*!50106 EVENT `{name}` ON SCHEDULE EVERY 1 "
    "SECOND STARTS '2026-11-29 12:36:18' ON COMPLETION {completion} {status} "
    "COMMENT 'it''s ENABLE DO' DO INSERT INTO t VALUES (1) \n*/ ;;\n"
)


@pytest.mark.parametrize("completion", ["NOT PRESERVE", "PRESERVE"])
@pytest.mark.parametrize("name", ["tidy", "we;ird`` ENABLE DO", "ON COMPLETION PRESERVE ENABLE "])
def test_events_are_written_switched_off_and_nothing_else_changes(
    name: str, completion: str
) -> None:
    dump = (
        "INSERT INTO `t` VALUES ('ON COMPLETION PRESERVE ENABLE ');\n"  # noqa: S608
        + EVENT.format(name=name, completion=completion, status="ENABLE")
        + EVENT.format(name="off", completion=completion, status="DISABLE ON SLAVE")
    ).encode()
    expected = dump.replace(
        f"{completion} ENABLE COMMENT".encode(), f"{completion} DISABLE COMMENT".encode(), 1
    )
    assert expected != dump
    assert mariadb.switch_off_events(dump) == expected


def test_a_rewrite_that_breaks_fails_the_restore_even_when_the_loader_exits_0(
    tmp_path: Path,
) -> None:
    repo, snap = repo_with_a_big_dump(tmp_path)

    def breaks(lines: bytes) -> bytes:
        raise ValueError("no good")

    with pytest.raises(targets.RestoreFailed, match="could not be passed on to cat: ValueError"):
        targets.stream_into(
            repo, snap, ["sh", "-c", "cat > /dev/null"], dict(os.environ), "cat", str, breaks
        )
