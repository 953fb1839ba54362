"""A small real web app in a git repository for deploy tests: tests/support/switch_app.py
answering the VERSION of the commit it was built from, with a build, a release command
and a health path in its onwatch.toml."""

from __future__ import annotations

from pathlib import Path

from tests.support.switching import APP

TOML = """[build]
command = "echo built > built.txt"

[test]
command = "python3 -c 'print(1)'"

[release]
command = "{release}"

[web]
command = "RELEASE=$(cat VERSION) exec python3 app.py"

[health]
path = "/health"
"""
# The release command says which version it migrated, in the deploy's log (it runs in the
# sandbox, which sees nothing of the test's own folders).
RELEASE_OK = "echo migrated $(cat VERSION)"
RELEASE_FAILS = "echo migration 0003 cannot add the column >&2; exit 3"


def app_files(version: str, release: str = RELEASE_OK, health: str = "") -> dict[str, str]:
    files = {
        "onwatch.toml": TOML.format(release=release),
        "app.py": APP.read_text(),
        "VERSION": version + "\n",
    }
    if health:
        files["onwatch.toml"] = files["onwatch.toml"].replace(
            "exec python3", f"HEALTH={health} exec python3"
        )
    return files


def built_marker(directory: str) -> Path:
    return Path(directory) / "built.txt"
