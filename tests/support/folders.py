"""Folders that refuse new files, for tests of what onwatch does when it cannot write."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """No new files in the folder; root passes permission checks, so it is made immutable."""
    folder.chmod(0o500)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            yield
            return
        (folder / "probe").unlink()
        pytest.skip("cannot make a folder unwritable here")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o700)
