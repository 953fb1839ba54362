"""How a service is built and tested: its `onwatch.toml`, or, without one, what its files
show (uv, pip or npm). Every problem is one line that names the file's line, for the
pipeline's first step to show."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = "onwatch.toml"
# table -> its settings -> the type they take, in words and as a Python type.
TEXT = ("text", str)
NAMES = ("a list of texts", list)
SETTINGS: dict[str, dict[str, tuple[str, type]]] = {
    "build": {"command": TEXT},
    "test": {"command": TEXT, "report": TEXT},
    "release": {"command": TEXT},
    "web": {"command": TEXT},
    "health": {"path": TEXT},
    "env": {"names": NAMES},
}
# What people call the types TOML gives, for "got a number".
TYPE_WORDS = {
    bool: "true or false",
    int: "a number",
    float: "a number",
    str: "text",
    list: "a list",
    dict: "a table",
}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ProjectError(Exception):
    """The project cannot be read; `lines` says every problem, the first one first."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = lines


@dataclass(frozen=True)
class Project:
    source: str  # where the commands come from, in words
    build: str = ""
    test: str = ""
    release: str = ""
    web: str = ""
    health: str = ""
    env_names: list[str] = field(default_factory=list)
    # The test step's JUnit XML report, relative to the checkout ("" when none).
    report: str = ""

    def steps(self) -> list[tuple[str, str]]:
        """(name, command) of the steps a pipeline runs, in order."""
        return [(name, cmd) for name, cmd in (("build", self.build), ("test", self.test)) if cmd]


def read(workspace: Path) -> Project:
    path = workspace / FILE
    if path.is_file():
        return parse(path.read_bytes())
    return detect(workspace)


def parse(raw: bytes) -> Project:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ProjectError([f"{FILE} is not UTF-8 text; save it as UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProjectError([syntax_error(str(e))]) from None
    problems = check(data, Locator(text))
    if problems:
        raise ProjectError(problems)
    found = {t: data.get(t, {}) for t in SETTINGS}
    project = Project(
        source=FILE,
        build=found["build"].get("command", ""),
        test=found["test"].get("command", ""),
        release=found["release"].get("command", ""),
        web=found["web"].get("command", ""),
        health=found["health"].get("path", ""),
        env_names=list(found["env"].get("names", [])),
        report=found["test"].get("report", ""),
    )
    if project.report and not report_path_ok(project.report):
        line = Locator(text).key("test", "report")
        raise ProjectError(
            [
                f"{FILE} line {line}: test.report must be a path inside the repository "
                f'(e.g. "reports/junit.xml"), not {project.report!r}'
            ]
        )
    if not project.steps():
        raise ProjectError(
            [f'{FILE} says neither how to build nor how to test; add [test] command = "…"']
        )
    return project


def report_path_ok(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


def syntax_error(message: str) -> str:
    # tomllib ends its message with "(at line 4, column 10)": lead with the line instead.
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if not found:
        return f"{FILE}: {message}"
    what = message[: found.start()]
    if what == "Illegal character '\\n'":
        what = "a quoted text is not closed on its line (a quote is missing)"
    return f"{FILE} line {found.group(1)}: {what[:1].lower()}{what[1:]} (column {found.group(2)})"


def check(data: dict[str, Any], where: Locator) -> list[str]:
    problems = []
    for table, value in data.items():
        line = where.table(table)
        if table not in SETTINGS:
            known = ", ".join(f"[{t}]" for t in SETTINGS)
            problems.append(
                f"{FILE} line {line}: [{table}] is not a section onwatch reads ({known})"
            )
        elif not isinstance(value, dict):
            problems.append(f"{FILE} line {line}: {table} must be a table ([{table}])")
        else:
            problems += check_table(table, value, where)
    return problems


def check_table(table: str, values: dict[str, Any], where: Locator) -> list[str]:
    problems = []
    for key, value in values.items():
        line = where.key(table, key)
        wanted = SETTINGS[table].get(key)
        if wanted is None:
            known = ", ".join(SETTINGS[table])
            problems.append(
                f"{FILE} line {line}: {table}.{key} is not a setting of [{table}] (it has: {known})"
            )
            continue
        words, kind = wanted
        if not isinstance(value, kind) or isinstance(value, bool):
            got = TYPE_WORDS.get(type(value), type(value).__name__)
            problems.append(f"{FILE} line {line}: {table}.{key} must be {words}, got {got}")
        elif isinstance(value, list):
            problems += check_names(table, key, value, line)
        elif isinstance(value, str) and not value.strip():
            problems.append(f"{FILE} line {line}: {table}.{key} is empty; remove it or fill it in")
    return problems


def check_names(table: str, key: str, value: list[Any], line: int) -> list[str]:
    wrong = [v for v in value if not isinstance(v, str) or not NAME.fullmatch(v)]
    if not wrong:
        return []
    return [
        f"{FILE} line {line}: {table}.{key} must list variable names (letters, digits and _), "
        f"not {wrong[0]!r}"
    ]


class Locator:
    """The line a table or setting is on. tomllib gives values, not positions, and a
    problem people cannot find in their file is half a message."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def table(self, table: str) -> int:
        header = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]")
        dotted = re.compile(rf"^\s*{re.escape(table)}\s*\.")
        for n, line in enumerate(self.lines, 1):
            if header.match(line) or dotted.match(line):
                return n
        return 1

    def key(self, table: str, key: str) -> int:
        current = ""
        setting = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        dotted = re.compile(rf"^\s*{re.escape(table)}\s*\.\s*{re.escape(key)}\s*=")
        for n, line in enumerate(self.lines, 1):
            header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if header:
                current = header.group(1)
            elif (current == table and setting.match(line)) or (not current and dotted.match(line)):
                return n
        return self.table(table)


# --- without onwatch.toml ------------------------------------------------------------------

DETECTED = [
    ("uv.lock", "a Python project with uv.lock", "uv sync --frozen", "uv run pytest"),
    (
        "requirements.txt",
        "a Python project with requirements.txt",
        "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt pytest",
        ".venv/bin/python -m pytest",
    ),
    ("package-lock.json", "a Node project with package-lock.json", "npm ci", "npm test"),
]


# Where detected pytest runs write their JUnit report, for the pipeline to read.
DETECTED_REPORT = ".onwatch/junit.xml"


def detect(workspace: Path) -> Project:
    for marker, what, build, test in DETECTED:
        if (workspace / marker).is_file():
            report = ""
            if test.endswith("pytest"):
                report = DETECTED_REPORT
                test += f" --junitxml={workspace / DETECTED_REPORT}"
            return Project(source=f"no {FILE}: {what}", build=build, test=test, report=report)
    raise ProjectError(
        [
            f"no {FILE} and nothing onwatch recognises (uv.lock, requirements.txt or "
            f"package-lock.json): add an {FILE} that says how to test, e.g. "
            '[test] command = "make test"'
        ]
    )
