"""Which PostgreSQL client tools onwatch picks without ONWATCH_PG_BIN_DIR: the newest
installed major version, since a newer pg_dump reads older servers but not the reverse."""

from __future__ import annotations

from pathlib import Path

from onwatch.core.postgres import bin_dirs


def test_the_newest_major_version_comes_first_by_number_not_by_text(tmp_path: Path) -> None:
    for version in ("9.6", "13", "17", "10", "misc"):
        (tmp_path / version / "bin").mkdir(parents=True)
    assert [d.parent.name for d in bin_dirs(tmp_path)] == ["17", "13", "10", "9.6"]
