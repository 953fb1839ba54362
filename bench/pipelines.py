"""Pipelines: 20 pushes of a small real Python project (uv + pytest), one after another.

    .venv/bin/python bench/pipelines.py [--pushes 20]

Makes a small project in a git repository of its own (a module, 30 pytest tests, a
`uv.lock` with pytest in it, an `onwatch.toml` whose build is `uv sync --frozen` and whose
test is `uv run pytest`), starts a real `onwatch worker` on a data directory of its own
(SQLite, or a fresh PostgreSQL database when DATABASE_URL is set, as the tests do) with the
service pointing at that repository, then per push: commits a change, queues a pipeline as
a push does (`services.run_pipeline`, timed from the moment it is queued) and waits for it to
end; and right after it, the same commands by hand — `git clone`, `uv sync --frozen`,
`uv run pytest` in a fresh folder with a uv cache of their own, warmed the same way.

Prints per push the queue-to-start latency (queued → the worker starts it), the pipeline's
wall time (queued → ended) and the by-hand time, then medians and onwatch's overhead as a
ratio: pipeline / by hand, over the pushes with warm caches (all but the first; target
≤ 1.10). The machine's load average is printed too: the figures are only as quiet as the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import Running, django, isolated  # noqa: E402

PYPROJECT = """\
[project]
name = "shop"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = []

[dependency-groups]
dev = ["pytest>=8"]

[tool.pytest.ini_options]
pythonpath = ["."]
"""

ONWATCH_TOML = """\
[build]
command = "uv sync --frozen"

[test]
command = "uv run pytest -q"
"""

MODULE = """\
def total(prices: list[int], discount: int = {n}) -> int:
    return max(0, sum(prices) - discount)
"""

TESTS = """\
import pytest

from shop import total


@pytest.mark.parametrize("n", range(30))
def test_total(n: int) -> None:
    assert total([n, 100]) == max(0, n + 100 - {n})
"""

SETUP = """
from onwatch.core.audit import CLI
from onwatch.core.models import Organization
from onwatch.deploys import services
org = Organization.objects.create(name="Bench")
services.add_service(org, services.ServiceFields(name="shop", git_url={url!r}, branch="main"), CLI)
print(json.dumps("ok"))
"""

PUSH = """
from onwatch.core.audit import CLI
from onwatch.deploys import services
from onwatch.deploys.models import ENDED, Pipeline, Service
service = Service.objects.get(name="shop")
p = services.run_pipeline(service, CLI, "cli", services.Push(commit={commit!r}))
while p.state not in ENDED:
    time.sleep(0.05)
    p.refresh_from_db()
steps = [(s.name, s.state, s.seconds) for s in p.steps.order_by("position")]
print(json.dumps({{
    "state": p.state, "reason": p.reason,
    "queued": p.created_at.timestamp(),
    "started": p.started_at.timestamp() if p.started_at else None,
    "ended": p.ended_at.timestamp() if p.ended_at else None,
    "steps": steps,
    "tail": "\\n".join(s.tail for s in p.steps.exclude(state="succeeded")),
}}))
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def uv() -> list[str]:
    """The uv onwatch itself runs with, found as onwatch finds it (its steps get the same
    one): on the PATH, or the `uv` package of this Python or of the one its venv came from."""
    if found := shutil.which("uv"):
        return [found]
    for python in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", "")]):
        asked = subprocess.run(
            [python, "-c", "import uv; print(uv.find_uv_bin())"], capture_output=True, text=True
        )
        if asked.returncode == 0 and asked.stdout.strip():
            return [asked.stdout.strip()]
    raise SystemExit("bench: no uv found (scripts/python-env.sh says how onwatch finds one)")


def make_project(repo: Path) -> None:
    repo.mkdir()
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "onwatch.toml").write_text(ONWATCH_TOML)
    (repo / "shop.py").write_text(MODULE.format(n=0))
    (repo / "tests").mkdir()
    (repo / "tests" / "test_shop.py").write_text(TESTS.format(n=0))
    subprocess.run([*uv(), "lock", "--quiet"], cwd=repo, check=True)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "-A")
    git(
        repo,
        "-c",
        "user.name=Bench",
        "-c",
        "user.email=bench@example.org",
        "commit",
        "-qm",
        "start",
    )


def push(repo: Path, n: int) -> str:
    """One change to code and tests, committed; its commit."""
    (repo / "shop.py").write_text(MODULE.format(n=n))
    (repo / "tests" / "test_shop.py").write_text(TESTS.format(n=n))
    git(
        repo,
        "-c",
        "user.name=Bench",
        "-c",
        "user.email=bench@example.org",
        "commit",
        "-qam",
        f"discount {n}",
    )
    return git(repo, "rev-parse", "HEAD")


def by_hand(repo: Path, commit: str, cache: Path, scratch: Path) -> float:
    """The pipeline's commands by hand in a fresh folder: seconds."""
    folder = scratch / f"hand-{commit[:12]}"
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    subprocess.run(["git", "clone", "--quiet", str(repo), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "checkout", "--quiet", commit], check=True)
    for command in (["sync", "--frozen", "--quiet"], ["run", "--quiet", "pytest", "-q"]):
        subprocess.run([*uv(), *command], cwd=folder, env=env, check=True, capture_output=True)
    took = time.monotonic() - started
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, isolated(Path(tmp)) as env:
        scratch = Path(tmp)
        repo = scratch / "shop"
        make_project(repo)
        django(SETUP.format(url=str(repo)), env, migrate=True)
        cache = scratch / "hand-cache"
        rows = []
        with Running(["worker"], env):
            for n in range(1, args.pushes + 1):
                commit = push(repo, n)
                got = json.loads(django(PUSH.format(commit=commit), env, timeout=600))
                if got["state"] != "succeeded":
                    raise SystemExit(f"pipeline {n} {got['state']}: {got['reason']}\n{got['tail']}")
                hand = by_hand(repo, commit, cache, scratch)
                queue = got["started"] - got["queued"]
                wall = got["ended"] - got["queued"]
                rows.append((queue, wall, hand))
                steps = ", ".join(f"{name} {sec:.2f} s" for name, _, sec in got["steps"])
                print(
                    f"push {n:2}: queued→started {queue * 1000:5.0f} ms, pipeline {wall:5.2f} s, "
                    f"by hand {hand:5.2f} s ({steps})",
                    flush=True,
                )
    warm = rows[1:] or rows
    queue = statistics.median(r[0] for r in rows) * 1000
    worst = max(r[0] for r in rows) * 1000
    wall = statistics.median(r[1] for r in warm)
    hand = statistics.median(r[2] for r in warm)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        textwrap.dedent(
            f"""\
            queue to start: median {queue:.0f} ms, worst {worst:.0f} ms
            first push (cold caches): pipeline {rows[0][1]:.2f} s, by hand {rows[0][2]:.2f} s
            warm caches, median of {len(warm)}: pipeline {wall:.2f} s, by hand {hand:.2f} s"""
        )
    )
    verdict = "met" if wall / hand <= 1.10 else "missed"
    print(
        f"summary: onwatch overhead {wall / hand:.2f}× by hand with warm caches "
        f"(target ≤ 1.10: {verdict})"
    )


if __name__ == "__main__":
    main()
