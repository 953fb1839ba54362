"""SQLite files and directories: consistent copies, what is in them, and checks on what
came back from a restore."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from onwatch.backups.contents import Contents

SAMPLE_SIZE = 50


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's online backup API: safe while the app writes."""
    if not source.is_file():
        raise FileNotFoundError(f"the SQLite file {source} does not exist")
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def sqlite_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {t: db.execute(f'SELECT count(*) FROM "{_quote(t)}"').fetchone()[0] for t in tables}  # noqa: S608  (names from sqlite_master, quoted)


def sqlite_contents(path: Path) -> Contents:
    """Row count and content checksum of every table in one pass over its rows: the sum
    of the first 64 bits of a hash of each row's repr (exact for ints, floats, text,
    blobs and NULL), so row order does not matter."""
    found = Contents()
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        for (table,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall():
            rows, total = 0, 0
            for row in db.execute(f'SELECT * FROM "{_quote(table)}"'):  # noqa: S608  (names from sqlite_master, quoted)
                rows += 1
                digest = hashlib.blake2b(repr(row).encode(), digest_size=8).digest()
                total += int.from_bytes(digest, "big")
            found.rows[table], found.checksums[table] = rows, str(total)
    return found


def _quote(name: str) -> str:
    return name.replace('"', '""')


def sqlite_integrity(path: Path) -> str:
    """'ok', or what `PRAGMA integrity_check` found wrong."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    return "; ".join(str(r[0]) for r in rows)


def sqlite_query(path: Path, query: str) -> list[list[Any]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [list(r) for r in db.execute(query).fetchall()]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def walk(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [Path(dirpath) / n for n in sorted(filenames)]
    return [p for p in found if p.is_file() and not p.is_symlink()]


def manifest(root: Path, sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """File count, bytes and the hashes of an evenly spread sample of files: enough to
    prove a restore brought the tree back without hashing every file twice."""
    if not root.is_dir():
        raise FileNotFoundError(f"the directory {root} does not exist")
    files = walk(root)
    step = max(1, len(files) // sample_size)
    sample = files[::step][:sample_size]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "sample": {str(p.relative_to(root)): sha256(p) for p in sample},
    }
