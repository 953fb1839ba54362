"""Where the backup tools live and where restic keeps its cache."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings

from onwatch.config import env

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_tool(name: str) -> str:
    """pg_dump, pg_restore: from ONWATCH_PG_BIN_DIR, else PATH, else the newest
    /usr/lib/postgresql/N/bin (newer pg_dump reads older servers, not the other way)."""
    configured = env("ONWATCH_PG_BIN_DIR", "")
    if configured:
        return str(Path(configured) / name)
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name) or name


def restic_cache() -> Path:
    return Path(settings.DATA_DIR) / "restic-cache"


def scratch_dir() -> str | None:
    """Where drills restore SQLite files and directories: ONWATCH_SCRATCH_DIR, else the
    system's temporary directory. It needs room for the largest restored copy."""
    return env("ONWATCH_SCRATCH_DIR", "") or None
