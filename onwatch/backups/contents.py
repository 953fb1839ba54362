"""What a backup holds, per table: row counts and content checksums, recorded when the
backup is taken and compared with the restored copy in a drill.

A checksum is an order-independent sum of per-row hashes, so neither end sorts; it is
stored as a decimal string (it outgrows JSON's safe integers). Runs recorded before
checksums existed have none, and their drills compare counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Contents:
    rows: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"tables": self.rows, "checksums": self.checksums}


def checksum_checks(expected: dict[str, str], actual: dict[str, str]) -> list[dict[str, Any]]:
    """One check per table the backup checksummed; tables it did not know are the row
    counts' business."""
    found = []
    for table in sorted(expected):
        got = actual.get(table)
        if got is None:
            detail = "missing from the restored copy"
        elif got == expected[table]:
            detail = "same rows as at backup"
        else:
            detail = "the rows differ from the backup's (same table, other contents)"
        found.append(
            {"check": f"checksum of {table}", "ok": got == expected[table], "detail": detail}
        )
    return found
