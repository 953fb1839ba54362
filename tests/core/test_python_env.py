"""bin/onwatch on a machine whose newest Python is too old (stock Debian 12 has 3.11): one
line that says what onwatch needs and how to get it, and nothing installed or downloaded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

# An old Python pyenv keeps beside the new ones, or the system's (stock Debian 12 has 3.11).
PYENV = sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3"), reverse=True)
OLD_PYTHONS = [*PYENV, Path("/usr/bin/python3")]


def is_old(python: Path) -> bool:
    check = "import sys; sys.exit(0 if (3, 0) <= sys.version_info < (3, 12) else 1)"
    return python.is_file() and subprocess.run([python, "-c", check], check=False).returncode == 0


def old_python() -> Path:
    for python in OLD_PYTHONS:
        if is_old(python):
            return python
    pytest.skip("no Python 3 older than 3.12 on this machine to stand in for Debian 12's")


def version_of(python: Path) -> str:
    done = subprocess.run([python, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_without_python_3_12_bin_onwatch_says_so_in_one_line_and_installs_nothing(
    tmp_path: Path,
) -> None:
    python = old_python()
    path, home = tmp_path / "bin", tmp_path / "home"
    path.mkdir()
    home.mkdir()
    # The old Python is the only one on PATH, as on a fresh machine: no pyenv, no uv.
    (path / "python3").symlink_to(python)
    (path / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    env = {
        "HOME": str(home),
        "PATH": str(path),
        # Whatever happens, this checkout's own environment stays untouched.
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
        "UV_CACHE_DIR": str(tmp_path / "cache"),
        # The script before this fix ran pip, --break-system-packages last: with no index
        # to install from, it fails as before without changing the system's Python.
        "PIP_NO_INDEX": "1",
    }
    done = subprocess.run(
        ["/bin/bash", ROOT / "bin" / "onwatch", "up", "--port", "8123"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "onwatch: onwatch needs Python 3.12 or newer and this machine has only "
        f"{version_of(python)};"
    ), line
    assert "python3.12 package" in line and "uv python install 3.12" in line
    # Nothing was installed for this user, downloaded or made beside the checkout.
    assert list(home.iterdir()) == []
    assert not (tmp_path / "venv").exists()
