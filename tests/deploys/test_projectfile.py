"""onwatch.toml read, with a line number on every problem, and projects recognised
without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from onwatch.deploys.projectfile import Project, ProjectError, detect, parse

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

FULL = b"""# how shop is built, tested and run
[build]
command = "uv sync --frozen"

[test]
command = "uv run pytest --junitxml=report.xml"
report = "report.xml"

[release]
command = "uv run manage.py migrate"

[web]
command = "uv run gunicorn shop.wsgi --bind 127.0.0.1:$PORT"

[health]
path = "/healthz"

[env]
names = ["DATABASE_URL", "SECRET_KEY"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ProjectError) as raised:
        parse(text.encode())
    return raised.value.lines


def test_every_section_is_read() -> None:
    project = parse(FULL)
    assert project == Project(
        source="onwatch.toml",
        build="uv sync --frozen",
        test="uv run pytest --junitxml=report.xml",
        release="uv run manage.py migrate",
        web="uv run gunicorn shop.wsgi --bind 127.0.0.1:$PORT",
        health="/healthz",
        env_names=["DATABASE_URL", "SECRET_KEY"],
        report="report.xml",
    )
    assert project.steps() == [("build", project.build), ("test", project.test)]


def test_wrong_types_and_unknown_settings_name_their_lines() -> None:
    text = '[build]\ncommand = "make"\n\n[test]\ncommand = 3\n[env]\nnames = "DATABASE_URL"\n'
    text += '[deploy]\nto = "prod"\n[health]\npath = ["/"]\n'
    assert problems(text) == [
        "onwatch.toml line 5: test.command must be text, got a number",
        "onwatch.toml line 7: env.names must be a list of texts, got text",
        "onwatch.toml line 8: [deploy] is not a section onwatch reads "
        "([build], [test], [release], [web], [health], [env])",
        "onwatch.toml line 11: health.path must be text, got a list",
    ]


def test_dotted_keys_and_bad_names_are_found_too() -> None:
    assert problems('test.command = true\nenv.names = ["OK", "2BAD"]\n') == [
        "onwatch.toml line 1: test.command must be text, got true or false",
        "onwatch.toml line 2: env.names must list variable names (letters, digits and _), "
        "not '2BAD'",
    ]


def test_a_syntax_error_leads_with_its_line() -> None:
    assert problems('[test]\ncommand = "unclosed\n') == [
        "onwatch.toml line 2: a quoted text is not closed on its line (a quote is missing) "
        "(column 20)"
    ]


def test_a_file_with_nothing_to_run_says_what_to_add() -> None:
    assert problems('[health]\npath = "/"\n') == [
        'onwatch.toml says neither how to build nor how to test; add [test] command = "…"'
    ]


def test_text_that_is_not_utf8_is_refused_in_words() -> None:
    with pytest.raises(ProjectError, match="not UTF-8"):
        parse(b"[test]\ncommand = '\xff'\n")


@pytest.mark.parametrize(
    ("marker", "build", "test"),
    [
        ("uv.lock", "uv sync --frozen", "uv run pytest --junitxml={}/.onwatch/junit.xml"),
        (
            "requirements.txt",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt pytest",
            ".venv/bin/python -m pytest --junitxml={}/.onwatch/junit.xml",
        ),
        ("package-lock.json", "npm ci", "npm test"),
    ],
)
def test_projects_without_the_file_are_recognised(
    tmp_path: Path, marker: str, build: str, test: str
) -> None:
    (tmp_path / marker).write_text("")
    project = detect(tmp_path)
    assert (project.build, project.test) == (build, test.format(tmp_path))
    assert project.report == (".onwatch/junit.xml" if "pytest" in test else "")
    assert project.source.startswith("no onwatch.toml: ")


@pytest.mark.parametrize("path", ["/etc/passwd", "../other/junit.xml"])
def test_a_report_outside_the_repository_is_refused_with_its_line(path: str) -> None:
    assert problems(f'[test]\ncommand = "make test"\nreport = "{path}"\n') == [
        f'onwatch.toml line 3: test.report must be a path inside the repository (e.g. "reports/'
        f"junit.xml\"), not '{path}'"
    ]
