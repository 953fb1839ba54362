"""The test suite's own rules, so a newcomer finds their way: shared code lives in
tests/support/ (never imported from another test module), tests sit in their app's folder,
and the session's settings are set before Django reads them."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
from django.conf import settings

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

TESTS = Path(__file__).resolve().parents[1]
IMPORT_IN_CODE = re.compile(r"(?:from|import)\s+(tests\.[\w.]+)")


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, including in Python code passed to a subprocess as a
    string to `python -c`."""
    tree = ast.parse(path.read_text())
    found = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    found += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += IMPORT_IN_CODE.findall(node.value)
    return found


def test_test_modules_import_only_the_support_package_from_tests() -> None:
    wrong = {
        f"{path.relative_to(TESTS)} imports {module}"
        for path in TESTS.rglob("*.py")
        for module in imported_modules(path)
        if module.startswith("tests.") and not module.startswith("tests.support")
    }
    assert not wrong, sorted(wrong)


def test_tests_sit_in_their_apps_folder() -> None:
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not loose, f"move these into tests/<app>/: {loose}"
    for folder in (p for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (folder / "__init__.py").is_file(), f"{folder.name} has no __init__.py"


def test_the_support_package_holds_no_tests() -> None:
    assert not list((TESTS / "support").glob("test_*.py"))


def test_settings_read_at_start_up_already_point_into_the_sessions_own_data_dir() -> None:
    # Settings derived from the data directory when Django reads them (the audit head
    # file) must not point into the developer's real one.
    session_dir = Path(os.environ["ONWATCH_DATA_DIR"])
    assert session_dir.name.startswith("onwatch-tests-")
    assert Path(settings.DATA_DIR) == session_dir
    assert Path(settings.AUDIT_HEAD_FILE).parent == session_dir
    assert Path(settings.KEY_FILE) == session_dir / "keyring.json"
