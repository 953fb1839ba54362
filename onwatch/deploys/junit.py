"""Test reports in JUnit XML, as pytest (`--junitxml`), Jest, Maven and most runners write
them: every test case with its outcome, so a failed pipeline names the tests that failed.

Reports come from the team's own test runs, so they are read as untrusted input: a size
limit, and no document type at all. A DTD is what entity attacks need (a "billion laughs"
file expands a few hundred bytes into gigabytes, an external entity reads a local file),
and no test runner writes one. defusedxml would do the same but is not a dependency.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

MAX_BYTES = 20 * 1024**2
MESSAGE_CHARS = 200
OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}
ROOTS = ("testsuites", "testsuite")


class JUnitError(Exception):
    """A report that cannot be read; the message is one line that says why."""


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    classname: str
    seconds: float
    outcome: str  # passed, failed, error or skipped
    message: str  # the first line of the failure, error or skip message, ≤ 200 characters


@dataclass(frozen=True)
class Report:
    cases: list[Case]
    total: int
    failed: int
    errors: int
    skipped: int
    seconds: float


def read(path: Path, *, max_bytes: int = MAX_BYTES) -> Report:
    """The report at `path`; JUnitError when it is missing, too big or not JUnit XML."""
    data = _load(path, max_bytes)
    if not data.strip():
        raise JUnitError(
            f"the test report {path} is empty: the tests may have stopped before writing it"
        )
    reader = _Reader(path)
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = reader.refuse_doctype
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise JUnitError(
            f"the test report {path} is not complete XML ({expat.ErrorString(error.code)}, "
            f"line {error.lineno}): the tests may have stopped while writing it"
        ) from None
    return reader.report()


def _load(path: Path, max_bytes: int) -> bytes:
    try:
        # Not blocking and not following a link: a step can leave a FIFO here (open() would
        # wait for a writer for ever, holding the pipelines slot) or a link to onwatch's files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise JUnitError(f"the test report {path} is a link, not a file") from None
        raise JUnitError(f"cannot read the test report {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as report:
            status = os.fstat(report.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise JUnitError(f"the test report {path} is not a regular file")
            # The size first, so a huge report is refused unread; the read is bounded too,
            # for a report still growing.
            too_big = status.st_size > max_bytes
            data = b"" if too_big else report.read(max_bytes + 1)
    except OSError as error:
        raise JUnitError(f"cannot read the test report {path}: {error.strerror}") from None
    if too_big or len(data) > max_bytes:
        raise JUnitError(
            f"the test report {path} is larger than the {_size(max_bytes)} onwatch reads: "
            "write one report per test suite"
        )
    return data


def _size(count: int) -> str:
    return f"{count / 1024**2:.3g} MB" if count >= 1024**2 else f"{count:,} bytes"


def _seconds(value: str | None) -> float:
    """A time attribute; a missing or odd one (some runners write "1,234.5") is read as well
    as it can be, never refused: a test's duration is not worth losing its outcome over."""
    try:
        seconds = float((value or "0").replace(",", ""))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _first_line(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


class _Reader:
    """Collects cases as the parser walks the document, keeping only what a Case needs
    (a report's captured output can be most of its size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cases: list[Case] = []
        self.suites: list[str] = []
        self.suite_seconds: list[float | None] = []  # of the outermost suites
        self.started = False
        self.case: dict[str, str] | None = None  # the attributes of the open test case
        self.outcome = ("passed", "")  # ... and its outcome and message so far
        self.message: list[str] | None = None  # text of a failure without a message

    def refuse_doctype(self, *args: object) -> None:
        raise JUnitError(
            f"the test report {self.path} declares a document type, which test runners do "
            "not write and onwatch does not read (its entities could expand to gigabytes)"
        )

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if not self.started:
            self._check_root(tag)
        if tag == "testsuite":
            self._start_suite(attrs)
        elif tag == "testcase":
            self.case, self.outcome = attrs, ("passed", "")
        elif tag in OUTCOMES and self.case is not None and self.outcome[0] == "passed":
            # The first failure, error or skip of a case is its outcome.
            self.outcome = (OUTCOMES[tag], _first_line(attrs.get("message", "")))
            self.message = None if self.outcome[1] else []

    def end(self, tag: str) -> None:
        if tag == "testsuite":
            self.suites.pop()
        elif tag == "testcase" and self.case is not None:
            self.cases.append(self._case(self.case))
            self.case = None
        elif tag in OUTCOMES and self.case is not None and self.message is not None:
            self.outcome = (self.outcome[0], _first_line("".join(self.message)))
            self.message = None

    def text(self, data: str) -> None:
        if self.message is not None and sum(map(len, self.message)) < 4 * MESSAGE_CHARS:
            self.message.append(data)

    def report(self) -> Report:
        counts = Counter(case.outcome for case in self.cases)
        whole = self.suite_seconds
        seconds = (
            sum(s for s in whole if s is not None)
            if whole and None not in whole
            else sum(case.seconds for case in self.cases)
        )
        return Report(
            cases=self.cases,
            total=len(self.cases),
            failed=counts["failed"],
            errors=counts["error"],
            skipped=counts["skipped"],
            seconds=seconds,
        )

    def _check_root(self, tag: str) -> None:
        self.started = True
        if tag not in ROOTS:
            raise JUnitError(
                f"the test report {self.path} is not JUnit XML: it starts with <{tag[:40]}>, "
                "not <testsuites> or <testsuite>"
            )

    def _start_suite(self, attrs: dict[str, str]) -> None:
        if not self.suites:
            self.suite_seconds.append(_seconds(attrs["time"]) if "time" in attrs else None)
        self.suites.append(attrs.get("name", ""))

    def _case(self, attrs: dict[str, str]) -> Case:
        return Case(
            suite=self.suites[-1] if self.suites else "",
            name=attrs.get("name", ""),
            classname=attrs.get("classname", ""),
            seconds=_seconds(attrs.get("time")),
            outcome=self.outcome[0],
            message=self.outcome[1],
        )
