"""bench/errors.py on a tiny load, onwatch alone (Bugsink's install and migrations take
a minute): the bench runs end to end and its figures come from the database."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.procs import ROOT

BENCH = [sys.executable, "bench/errors.py"]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args], cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=120
    )


def test_the_bench_stores_every_event_it_sends_grouped_by_issue() -> None:
    done = run_bench(
        *("--events", "20", "--large", "2", "--issues", "5", "--rate", "10"),
        *("--paced-seconds", "1", "--no-bugsink"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "20 of ~8." in out, out  # the SDK's events came out at the size asked
    assert "2 of ~50." in out, out
    assert re.search(r"onwatch \((SQLite|PostgreSQL), .*; 5 issues", out), out
    figures = re.findall(
        r"onwatch +(8 KB|50 KB|8 KB paced) +accepted .*lost (\d+), refused (\d+)", out
    )
    assert figures == [("8 KB", "0", "0"), ("50 KB", "0", "0"), ("8 KB paced", "0", "0")], out
    assert "then 10 more 8 KB events at 10/s" in out
    assert "summary, 8 KB events: accept" in out


def test_bad_arguments_get_one_line_and_status_2() -> None:
    done = run_bench("--issues", "600", "--no-bugsink")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--issues must be between 1 and 512")
