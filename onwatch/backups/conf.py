"""Where restic keeps its cache and drills their scratch copies. (Where pg_dump lives is
core/postgres.py's.)"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from onwatch.config import env


def restic_cache() -> Path:
    return Path(settings.DATA_DIR) / "restic-cache"


def scratch_dir() -> str | None:
    """Where drills restore SQLite files and directories: ONWATCH_SCRATCH_DIR, else the
    system's temporary directory. It needs room for the largest restored copy."""
    return env("ONWATCH_SCRATCH_DIR", "") or None
