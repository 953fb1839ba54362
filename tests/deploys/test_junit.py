"""JUnit XML test reports: the failing tests named, bad reports refused with one line."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onwatch.deploys import junit
from onwatch.deploys.junit import JUnitError
from onwatch.deploys.pipelines import report_path

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

SAMPLE = Path(__file__).parent / "junit_sample" / "sample_checks.py"

SEVERAL_SUITES = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="5" failures="2" errors="0" time="3.5">
  <testsuite name="cart" tests="2" failures="1" skipped="0" time="1,234.5">
    <testcase classname="cart adds an item" name="cart adds an item" time="0.01"/>
    <testcase classname="cart totals" name="cart totals in euros" time="0.25">
      <failure><![CDATA[

Error: expect(received).toBe(expected) // Object.is equality
    at Object.<anonymous> (cart.test.js:12:20)]]></failure>
    </testcase>
  </testsuite>
  <testsuite name="com.example.AppTest" time="0.5">
    <properties><property name="java.version" value="21"/></properties>
    <testcase name="testPrice" classname="com.example.AppTest" time="0.1">
      <failure message="expected:&lt;1&gt; but was:&lt;2&gt;" type="AssertionError">at line 3
      </failure>
      <system-out>lots of output</system-out>
    </testcase>
    <testcase name="testFlaky" classname="com.example.AppTest" time="nan">
      <flakyFailure message="timed out" type="java.net.SocketTimeoutException"/>
    </testcase>
    <testcase name="testLater" classname="com.example.AppTest">
      <skipped/>
    </testcase>
  </testsuite>
</testsuites>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite name="lolz"><testcase name="&lol9;"/></testsuite>
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "report.xml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def refusal(path: Path, **limits: int) -> str:
    with pytest.raises(JUnitError) as refused:
        junit.read(path, **limits)
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_a_report_written_by_pytest_names_each_outcome(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO"))}
    plugins_off = ["-p", "no:cacheprovider", "-p", "no:django"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins_off, "--junitxml", "report.xml", SAMPLE.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    report = junit.read(tmp_path / "report.xml")
    outcomes = {case.name: (case.outcome, case.message) for case in report.cases}
    assert outcomes["test_passes"] == ("passed", "")
    assert outcomes["test_fails"] == ("failed", "AssertionError: arithmetic is broken")
    assert outcomes["test_errors"][0] == "error"
    assert "database not reachable" in outcomes["test_errors"][1]
    assert outcomes["test_skipped"] == ("skipped", "needs a GPU")
    assert (report.total, report.failed, report.errors, report.skipped) == (4, 1, 1, 1)
    assert {case.classname for case in report.cases} == {"sample_checks"}
    assert {case.suite for case in report.cases} == {"pytest"}
    assert report.seconds > 0


def test_a_report_of_several_suites_names_the_failures_of_each(tmp_path: Path) -> None:
    report = junit.read(write(tmp_path, SEVERAL_SUITES))
    failed = [(c.suite, c.name, c.message) for c in report.cases if c.outcome == "failed"]
    assert failed == [
        (
            "cart",
            "cart totals in euros",
            "Error: expect(received).toBe(expected) // Object.is equality",
        ),
        ("com.example.AppTest", "testPrice", "expected:<1> but was:<2>"),
    ]
    by_name = {case.name: case for case in report.cases}
    assert by_name["testFlaky"].outcome == "passed"  # it passed when run again
    assert by_name["testFlaky"].seconds == 0.0
    assert by_name["testLater"].outcome == "skipped"
    assert (report.total, report.failed, report.errors, report.skipped) == (5, 2, 0, 1)
    assert report.seconds == 1234.5 + 0.5


def test_nested_suites_name_the_innermost_and_count_time_once(tmp_path: Path) -> None:
    """PHPUnit and Mocha nest suites; a case belongs to the innermost one."""
    nested = (
        '<testsuites><testsuite name="All" tests="2" time="2.0">'
        '<testsuite name="CartTest" time="1.5"><testcase name="testAdd" time="1.5"/>'
        "</testsuite>"
        '<testsuite name="PriceTest" time="0.5"><testcase name="testVat" time="0.5">'
        '<error message="TypeError: null"/></testcase></testsuite>'
        "</testsuite></testsuites>"
    )
    report = junit.read(write(tmp_path, nested))
    assert [(c.suite, c.name, c.outcome) for c in report.cases] == [
        ("CartTest", "testAdd", "passed"),
        ("PriceTest", "testVat", "error"),
    ]
    assert (report.errors, report.seconds) == (1, 2.0)


def test_a_long_message_is_cut_to_its_first_line_and_200_characters(tmp_path: Path) -> None:
    message = "x" * 300 + "&#10;second line"
    report = junit.read(
        write(
            tmp_path,
            f'<testsuite><testcase name="t"><error message="{message}"/></testcase></testsuite>',
        )
    )
    assert report.cases[0].message == "x" * 199 + "…"
    assert report.cases[0].suite == ""


def test_an_empty_report_is_refused_with_one_line(tmp_path: Path) -> None:
    for text in ("", " \n"):
        assert "is empty" in refusal(write(tmp_path, text))


def test_a_truncated_report_is_refused_with_one_line(tmp_path: Path) -> None:
    cut = SEVERAL_SUITES[: len(SEVERAL_SUITES) // 2]
    assert "not complete XML" in refusal(write(tmp_path, cut))


def test_a_report_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    with path.open("wb") as report:
        report.truncate(junit.MAX_BYTES + 1)  # sparse: nothing written, nothing to parse
    assert "larger than the 20 MB" in refusal(path)
    assert "larger than the 1,000 bytes" in refusal(write(tmp_path, SEVERAL_SUITES), max_bytes=1000)


def test_a_big_report_under_the_limit_is_read_whole(tmp_path: Path) -> None:
    cases = "".join(
        f'<testcase classname="big" name="test_{i}" time="0.001">'
        + ("<failure message='boom'/>" if i % 1000 == 0 else "")
        + "</testcase>\n"
        for i in range(100_000)
    )
    report = junit.read(write(tmp_path, f'<testsuite name="big">{cases}</testsuite>'))
    assert (report.total, report.failed) == (100_000, 100)
    assert report.cases[-1000].name == "test_99000"


def test_entities_are_refused_not_expanded(tmp_path: Path) -> None:
    assert "declares a document type" in refusal(write(tmp_path, BILLION_LAUGHS))
    secret = tmp_path / "secret.txt"
    secret.write_text("the key file")
    external = (
        f'<!DOCTYPE t [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<testsuite><testcase name="&x;"/></testsuite>'
    )
    message = refusal(write(tmp_path, external))
    assert "declares a document type" in message and "the key file" not in message


def test_a_file_that_is_not_junit_is_refused_with_one_line(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "<html><body>Coverage</body></html>"))
    assert "not JUnit XML: it starts with <html>" in message


def test_a_missing_report_is_refused_with_one_line(tmp_path: Path) -> None:
    assert "No such file or directory" in refusal(tmp_path / "nowhere.xml")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    # A step that leaves a FIFO must not freeze onwatch in open(): run the read in a thread
    # so a regression fails here instead of hanging the test run.
    os.mkfifo(tmp_path / "junit.xml")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(refusal, tmp_path / "junit.xml")
        try:
            message = reading.result(timeout=10)
        except concurrent.futures.TimeoutError:
            with open(tmp_path / "junit.xml", "wb"):  # lets the stuck open() return
                pass
            pytest.fail("reading a FIFO report waited for a writer")
    assert message.endswith("junit.xml is not a regular file")


def test_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    target = write(tmp_path, SEVERAL_SUITES)
    (tmp_path / "junit.xml").symlink_to(target)
    assert refusal(tmp_path / "junit.xml").endswith("junit.xml is a link, not a file")


def test_a_report_under_a_linked_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside, SEVERAL_SUITES)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "reports").symlink_to(outside)
    with pytest.raises(JUnitError, match="leads out of the checkout"):
        report_path(workspace, "reports/report.xml")
    (workspace / "real").mkdir()
    assert report_path(workspace, "real/report.xml") == workspace / "real" / "report.xml"
