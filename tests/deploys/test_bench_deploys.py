"""bench/deploys.py on two deploys and two rollbacks: it runs end to end through onwatch's
deploy job, its figures parse, and onwatch's counts on each deploy agree with its
clients'."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.procs import ROOT

# Its subject is switches under load through Caddy; the deploy rows it compares with are
# written by the same code on both databases (test_deploy_felt runs in both passes).
pytestmark = pytest.mark.once

BENCH = [sys.executable, "bench/deploys.py"]


def run_bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args], cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=timeout
    )


def figure(out: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)} +(.*)$", out, re.MULTILINE)
    assert found, f"no {label!r} in:\n{out}"
    return found.group(1)


def test_two_deploys_and_two_rollbacks_under_load_agree_with_onwatchs_counts() -> None:
    done = run_bench("--deploys", "2", "--clients", "8", "--no-autorollback")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert figure(out, "deploys, rollbacks") == "2, 2"
    served = int(figure(out, "requests served"))
    assert served > 100, out
    assert figure(out, "failed requests").strip() == "0", out
    assert figure(out, "old answers after a switch") == "0", out
    assert re.fullmatch(
        r"\d+ ms during switches \(\d+ requests\), \d+ ms outside \(\d+\)",
        figure(out, "p99 latency"),
    ), out
    assert re.fullmatch(
        r"p50 \d+\.\d\d s, max \d+\.\d\d s", figure(out, "rollback, queued to live")
    )
    assert figure(out, "onwatch's counts agree").startswith("4 of 4 switches"), out
    counted = re.fullmatch(
        r"(\d+) served, 0 failed, 0 mixed during the switches", figure(out, "onwatch counted")
    )
    assert counted, out
    # onwatch counts only while a switch runs; the clients ran all along.
    assert 0 < int(counted.group(1)) < served
    assert "automatic rollback: not measured (--no-autorollback)" in out
    verdict = figure(out, "verdict")
    assert "failed requests 0: met" in verdict and "onwatch's counts agree: met" in verdict


def test_bad_arguments_get_one_line_and_status_2() -> None:
    done = run_bench("--deploys", "0", timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--deploys must be between 1 and 10000")
