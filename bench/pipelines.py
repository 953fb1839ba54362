"""Pipelines end to end: pushes of a small real Python project (uv + pytest) tested by a
real `onwatch worker`, one after another, against the same commands run by hand.

    .venv/bin/python bench/pipelines.py [--pushes 20] [--phases] [--baseline DIR]

Starts `onwatch web` and `onwatch worker` on a data directory of their own (SQLite, or a
fresh PostgreSQL database when DATABASE_URL is set, as the tests do) with one service: a
git repository holding a uv project (its lock made by onwatch's uv, which asks PyPI once)
whose build is `uv sync --frozen` and whose test is `uv run pytest -q` followed by a
script that prints the time five times. One pipeline and one run by hand warm the caches
first. Then each push commits a change and queues a pipeline (`onwatch pipelines run`),
follows its log over server-sent events like a browser, and when it has ended runs the
same commands by hand: a fresh clone at the commit, the same uv, and what onwatch's steps
get (their environment, not the caller's; a warm dependency cache and warm bytecode of
their own, shared as onwatch shares them).

Prints: queue-to-start latency (pipeline queued → started by the worker), onwatch's
overhead (pipeline wall time, checkout included, over the by-hand time: target ≤ 1.10)
and log latency (a line printed by the step → its event at the viewer: p99 target ≤ 1 s).
The load average is printed too: this machine is shared.

--phases: where each pipeline's time went besides its commands (checkout, each step's
sandbox and network set-up and teardown, what onwatch records; the worker logs them at
DEBUG), and the by-hand run's own parts, medians over the pushes.

--baseline DIR: the same pushes also through a worker of the onwatch checked out in DIR
(`git worktree add /tmp/main main`), in turns of a few pushes each, so both figures come
from the same run under the same load. Its database must have the same migrations.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import Running, django, isolated, run, wait_http  # noqa: E402
from tests.support.sse import Stream  # noqa: E402

# How the worker's log line with a pipeline's phases starts (onwatch/deploys/phases.py;
# not imported: a baseline checkout may have none).
PHASES = "phases of pipeline #"
OVERLAPPED = "overlapped: "

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com"]
PYPROJECT = """[project]
name = "shop"
version = "0.1.0"
requires-python = ">=3.11"

[dependency-groups]
dev = ["pytest"]
"""
TESTS = (
    "def test_sum():\n    assert 1 + 1 == 2\n\n\ndef test_total():\n    assert sum([1, 2]) == 3\n"
)
STAMP = (
    "import time\n\nfor _ in range(5):\n"
    "    print(f'stamp {time.time()}', flush=True)\n    time.sleep(0.1)\n"
)
TOML = """[build]
command = "uv sync --frozen"

[test]
command = "uv run pytest -q && uv run python stamp.py"
"""
BY_HAND = ["uv sync --frozen", "uv run pytest -q && uv run python stamp.py"]
SETUP = """
from django.contrib.auth import get_user_model
from django.test import Client
from onwatch.core.models import Membership, Organization
org = Organization.objects.create(name="Bench")
user = get_user_model().objects.create_user(username="v@bench.example", password="x" * 20)
Membership.objects.create(org=org, user=user, role="viewer")
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
TOTP.activate(user, generate_totp_secret())
client = Client()
client.force_login(user)
print(client.cookies["sessionid"].value)
"""
TIMES = """
from onwatch.deploys.models import Pipeline
print(json.dumps([
    [p.pk, p.state, (p.started_at - p.created_at).total_seconds(),
     (p.ended_at - p.started_at).total_seconds(),
     {s.name: s.seconds for s in p.steps.all()}]
    for p in Pipeline.objects.order_by("pk")
]))
"""


# What the steps warned about (uv's "falling back to full copy", say): where time may go.
WARNINGS: set[str] = set()


def find_uv() -> str:
    """onwatch's uv, found the way onwatch finds it (deploys/workdir.onwatch_uv): on PATH,
    the `uv` package of its Python, or the one installed beside the checkout."""
    if found := shutil.which("uv"):
        return str(Path(found).resolve())
    for python in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", "")]):
        asked = subprocess.run(
            [python, "-c", "import uv; print(uv.find_uv_bin())"], capture_output=True, text=True
        )
        if asked.returncode == 0:
            return asked.stdout.strip()
    # Where scripts/python-env.sh puts one when the machine had none.
    if os.access(beside := ROOT / ".uv" / "bin" / "uv", os.X_OK):
        return str(beside.resolve())
    raise SystemExit("bench: no uv where onwatch runs; run scripts/test or bin/onwatch once")


def make_repo(repo: Path, uv: str) -> None:
    repo.mkdir()
    files = {"pyproject.toml": PYPROJECT, "test_app.py": TESTS, "stamp.py": STAMP}
    files["onwatch.toml"] = TOML
    for name, text in files.items():
        (repo / name).write_text(text)
    subprocess.run([uv, "lock", "--quiet"], cwd=repo, check=True)
    subprocess.run(["git", "init", "--quiet", "--initial-branch", "main"], cwd=repo, check=True)
    push(repo, 0)


def push(repo: Path, n: int) -> str:
    (repo / "CHANGES").write_text(f"change {n}\n")
    subprocess.run([*GIT, "add", "--all"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "--quiet", "-m", f"Change {n}"], cwd=repo, check=True)
    return head(repo)


def head(repo: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip()


def by_hand(
    repo: Path, sha: str, uv: str, caches: Path, scratch: Path, parts: dict[str, list[float]]
) -> float:
    """Seconds for the pipeline's commands run directly: clone, checkout, build, test;
    each part's seconds are added to `parts`. They get what onwatch's steps get (hand_env),
    with caches of their own kept warm between runs: dependencies and bytecode."""
    work = scratch / f"hand-{sha[:12]}-{time.monotonic_ns()}"
    started = time.monotonic()
    with timed(parts, "clone"):
        subprocess.run(["git", "clone", "--quiet", str(repo), str(work)], check=True)
    with timed(parts, "checkout"):
        subprocess.run(["git", "checkout", "--quiet", sha], cwd=work, check=True)
    env = hand_env(work, uv, caches)
    for name, command in zip(("build", "test"), BY_HAND, strict=True):
        with timed(parts, name):
            subprocess.run(
                ["bash", "-c", command], cwd=work, env=env, check=True, capture_output=True
            )
    return time.monotonic() - started


# What onwatch's steps get for the same commands (deploys/pipelines.step_env and
# workdir.tool_env), so the ratio measures onwatch and not a difference of conditions:
# not the caller's environment (its PYTHONDONTWRITEBYTECODE would make Python compile
# pytest at every run, its UV_* or VIRTUAL_ENV would point uv elsewhere, its HOME's uv
# settings and Pythons would apply).
CACHE_VARIABLES = {"uv": "UV_CACHE_DIR", "pip": "PIP_CACHE_DIR", "npm": "npm_config_cache"}
# As root, onwatch's steps share one mount with their caches and uv hard-links from them;
# otherwise it copies (workdir.tool_env).
LINK_MODE = "hardlink" if os.geteuid() == 0 else "copy"
SYSTEM_CERTIFICATES = "/etc/ssl/certs/ca-certificates.crt"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def hand_env(work: Path, uv: str, caches: Path) -> dict[str, str]:
    env = {name: str(caches / cache) for cache, name in CACHE_VARIABLES.items()}
    return {
        "PATH": f"{Path(uv).parent}:/usr/bin:/bin",
        "HOME": str(work / ".home"),
        "LANG": "C.UTF-8",
        "CI": "true",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPYCACHEPREFIX": str(share_bytecode(caches / "bytecode", work, caches / "uv")),
        **env,
        "UV_PYTHON_INSTALL_DIR": str(caches / "uv" / "python"),
        "UV_LINK_MODE": LINK_MODE,
        **certificates(uv),
    }


def certificates(uv: str) -> dict[str, str]:
    """The machine's trusted certificates, as onwatch names them to its steps (behind a
    TLS proxy, only these reach PyPI)."""
    if not Path(SYSTEM_CERTIFICATES).is_file():
        return {}
    said = subprocess.run([uv, "help", "sync"], capture_output=True, text=True).stdout
    flag = "UV_SYSTEM_CERTS" if "UV_SYSTEM_CERTS" in said else "UV_NATIVE_TLS"
    named = {name: SYSTEM_CERTIFICATES for name in ("SSL_CERT_FILE", "PIP_CERT")}
    return {**named, "NODE_EXTRA_CA_CERTS": SYSTEM_CERTIFICATES, flag: "true"}


def share_bytecode(cache: Path, work: Path, uv_cache: Path) -> Path:
    """The bytecode a run by hand finds, as onwatch's steps find theirs (see
    workdir.share_bytecode): a fresh folder per run, in which the system's, uv's Python's
    and the virtualenv's bytecode are links to what earlier runs compiled; the checkout's
    own is compiled again."""
    prefix = cache / ".runs" / work.name
    shared = {Path(d): Path(d) for d in (*SYSTEM_DIRS, uv_cache / "python")}
    shared[work / ".venv"] = Path("/.venv")
    for folder, kept in shared.items():
        (cache / kept.relative_to("/")).mkdir(parents=True, exist_ok=True)
        mirror = prefix / folder.relative_to("/")
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.symlink_to(cache / kept.relative_to("/"))
    return prefix


def own_cpu(pid: int) -> float:
    """Processor seconds a process took itself so far, not its children (the worker's are
    the steps): 0, this process (the bench, following the log as a browser would)."""
    if not pid:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def web_cpu(pid: int) -> float:
    """The web process's and its forked web workers' own processor seconds."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own_cpu(pid) + sum(own_cpu(int(child)) for child in children)


@contextmanager
def timed(parts: dict[str, list[float]], name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    parts.setdefault(name, []).append(time.monotonic() - started)


def follow(base_url: str, cookie: str, pipeline: int, delays: list[float]) -> None:
    """As a browser on the pipeline's page: its job's events until the end, noting how long
    each stamp the step printed took to arrive. Stamps printed before the stream opened are
    not counted (they come with the page)."""
    job = 0
    while not job:
        page = page_of(base_url, f"/pipelines/{pipeline}/", cookie)
        found = re.search(r"/jobs/(\d+)/events/", page)
        job = int(found[1]) if found else 0
        if not job:
            if "/jobs/" in page and "data-events" not in page:
                return  # ended before it could be followed
            time.sleep(0.05)
    stream = Stream(base_url, f"/jobs/{job}/events/?after=0", cookie, timeout=120)
    opened = time.time()
    while (event := stream.next(120)) is not None and event.event != "end":
        text = json.loads(event.data)["html"] if event.data else ""
        if text.startswith("stamp "):
            printed = float(text.split()[-1])
            if printed > opened:
                delays.append(event.at - printed)
        elif "warning" in text.lower():
            WARNINGS.add(text)
    stream.close()


def page_of(base_url: str, path: str, cookie: str) -> str:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers={"Cookie": f"sessionid={cookie}"})
    page = conn.getresponse().read().decode()
    conn.close()
    return page


def pipeline_of(output: str) -> int:
    found = re.search(r"pipeline #(\d+)", output)
    if not found:
        raise SystemExit(f"bench: could not queue a pipeline: {output}")
    return int(found[1])


def run_pipeline(env: dict[str, str], base_url: str, cookie: str, delays: list[float]) -> int:
    queued = run(["pipelines", "run", "shop"], env)
    pipeline = pipeline_of(queued.stdout + queued.stderr)
    follow(base_url, cookie, pipeline, delays)
    return pipeline


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


@dataclass
class Side:
    """One onwatch's pipelines (this checkout's, or the baseline's) and the same pushes
    by hand, run in the same turns."""

    label: str
    cwd: Path
    pipelines: list[int] = field(default_factory=list)
    hand: list[float] = field(default_factory=list)
    hand_parts: dict[str, list[float]] = field(default_factory=dict)
    phases: dict[int, dict[str, float]] = field(default_factory=dict)  # pipeline -> its
    # Processor seconds each process took while a pipeline ran, beside its commands.
    busy: dict[str, list[float]] = field(default_factory=dict)


TURN = 5  # pushes per worker before the other one takes over


@dataclass
class Bench:
    env: dict[str, str]
    base_url: str
    cookie: str
    repo: Path
    uv: str
    scratch: Path
    pushed: int = 0
    delays: list[float] = field(default_factory=list)
    web_pid: int = 0

    def by_hand(self, sha: str, parts: dict[str, list[float]]) -> float:
        return by_hand(self.repo, sha, self.uv, self.scratch / "hand-caches", self.scratch, parts)

    def pipeline(self, delays: list[float] | None = None) -> int:
        return run_pipeline(
            self.env, self.base_url, self.cookie, self.delays if delays is None else delays
        )

    def pushes(self, side: Side, count: int) -> None:
        """`count` pushes through a worker of `side`'s onwatch, each also run by hand,
        after one pipeline that warms the worker (not counted)."""
        with Running(["worker"], self.env, cwd=side.cwd) as worker:
            worker.wait_for("ready")
            self.pipeline([])
            for _ in range(count):
                self.pushed += 1
                sha = push(self.repo, self.pushed)
                pids = {"worker": worker.proc.pid, "web": self.web_pid, "viewer (bench)": 0}
                cpu = {name: web_cpu if name == "web" else own_cpu for name in pids}
                before = {name: cpu[name](pid) for name, pid in pids.items()}
                side.pipelines.append(self.pipeline())
                for name, pid in pids.items():
                    side.busy.setdefault(name, []).append(cpu[name](pid) - before[name])
                side.hand.append(self.by_hand(sha, side.hand_parts))
            worker.stop()
            side.phases |= phases_logged(worker.lines, side.pipelines[-count:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--phases", action="store_true", help="where each pipeline's time went")
    parser.add_argument("--baseline", type=Path, help="a checkout of onwatch to compare with")
    args = parser.parse_args()
    sides = [Side("this onwatch", ROOT)]
    if args.baseline:
        if not (args.baseline / "onwatch" / "__main__.py").is_file():
            raise SystemExit(f"bench: {args.baseline} is not a checkout of onwatch")
        sides.append(Side(f"baseline {args.baseline}", args.baseline.resolve()))
    uv = find_uv()
    with tempfile.TemporaryDirectory() as tmp, isolated(Path(tmp)) as env:
        scratch = Path(tmp)
        repo = scratch / "repo"
        make_repo(repo, uv)
        cookie = django(SETUP, env, migrate=True).split()[-1]
        added = run(["services", "add", "shop", str(repo)], env)
        assert added.returncode == 0, added.stderr
        if args.phases:
            env = {**env, "ONWATCH_LOG_LEVEL": "DEBUG"}
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/")
            bench = Bench(env, web.base_url, cookie, repo, uv, scratch, web_pid=web.proc.pid)
            bench.by_hand(head(repo), {})  # warms the cache used by hand
            while bench.pushed < args.pushes * len(sides):
                turn = min(TURN, args.pushes - bench.pushed // len(sides))
                for side in sides:
                    bench.pushes(side, turn)
            times = {t[0]: t for t in json.loads(django(TIMES, env).splitlines()[-1])}
    for side in sides:
        report(side, [times[pk] for pk in side.pipelines], args.phases)
    report_latency(bench.delays)


def phases_logged(lines: list[str], pipelines: list[int]) -> dict[int, dict[str, float]]:
    found: dict[int, dict[str, float]] = {}
    for line in lines:
        if PHASES in line:
            pk, _, seconds = line.split(PHASES, 1)[1].partition(" ")
            found[int(pk)] = json.loads(seconds)
    return {pk: found[pk] for pk in pipelines if pk in found}


def report(side: Side, times: list[list[Any]], phases: bool) -> None:
    print(f"--- {side.label}")
    failed = [t[0] for t in times if t[1] != "succeeded"]
    queued = [float(t[2]) for t in times]
    wall = [float(t[3]) for t in times]
    hand = side.hand
    print(f"{len(times)} pipelines, {len(failed)} not succeeded {failed or ''}")
    print(
        f"queue → start: p50 {statistics.median(queued):.2f} s, "
        f"p95 {percentile(queued, 0.95):.2f} s, max {max(queued):.2f} s"
    )
    steps: dict[str, list[float]] = {}
    for t in times:
        for name, seconds in t[4].items():
            steps.setdefault(name, []).append(seconds or 0.0)
    print(f"steps, p50 each: {medians(steps)}")
    print(f"by hand, p50 each: {medians(side.hand_parts)}")
    ratio = statistics.median(wall) / statistics.median(hand)
    # Each pipeline against its own run by hand, right after it: on a shared machine
    # whose load swings from minute to minute, the pair meets the same load.
    paired = [w / h for w, h in zip(wall, hand, strict=True)]
    print(
        f"pipeline wall time p50 {statistics.median(wall):.2f} s vs by hand p50 "
        f"{statistics.median(hand):.2f} s: overhead ratio {ratio:.2f} (target ≤ 1.10); "
        f"totals {sum(wall):.1f} s / {sum(hand):.1f} s = {sum(wall) / sum(hand):.2f}; "
        f"each with its own by hand: p50 {statistics.median(paired):.2f}, "
        f"p25–p75 {percentile(paired, 0.25):.2f}–{percentile(paired, 0.75):.2f}, "
        f"p90 {percentile(paired, 0.9):.2f}"
    )
    # What competes with the commands for this machine's cores while they run (and is not
    # there when they run by hand): onwatch's own work, and the viewer's.
    busy = ", ".join(
        f"{name} {statistics.median(s) * 1000:.0f} ms" for name, s in side.busy.items()
    )
    print(f"processor time per pipeline, p50 each: {busy}")
    if phases:
        report_outside(side.phases, {t[0]: float(t[3]) for t in times})
        report_phases(list(side.phases.values()))


def report_outside(logged: dict[int, dict[str, float]], wall: dict[int, float]) -> None:
    """Each pipeline's wall time but its commands' (what onwatch adds on its path, with the
    sandbox made for a step while the step before runs): free of the commands' own swings
    with the load, which the ratio is not."""
    outside = [wall[pk] - one.get("command", 0.0) for pk, one in logged.items() if pk in wall]
    if outside:
        p25, p50, p75 = (percentile(outside, p) * 1000 for p in (0.25, 0.5, 0.75))
        print(f"outside the commands, per pipeline: p50 {p50:.0f} ms, p25–p75 {p25:.0f}–{p75:.0f}")


def report_phases(logged: list[dict[str, float]]) -> None:
    if not logged:
        print("phases: none logged (a baseline without onwatch/deploys/phases.py logs none)")
        return
    names = list(dict.fromkeys(name for one in logged for name in one))
    per = {name: [one.get(name, 0.0) for one in logged] for name in names}
    print(f"phases over {len(logged)} pipelines, p50 each (summed over a pipeline's steps):")
    for name, seconds in per.items():
        print(f"  {name:<40} {statistics.median(seconds) * 1000:7.1f} ms")
    # What ran beside the pipeline's path (a step's sandbox made while another ran) is not
    # on it.
    outside = [
        sum(v for k, v in one.items() if k != "command" and not k.startswith(OVERLAPPED))
        for one in logged
    ]
    print(f"  {'all but the commands':<40} {statistics.median(outside) * 1000:7.1f} ms")


def medians(values: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} {statistics.median(s):.2f} s" for name, s in values.items())


def report_latency(delays: list[float]) -> None:
    p50, p99 = percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000
    print(
        f"log latency (print → event at the viewer) over {len(delays)} lines: "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(delays, default=float('nan')) * 1000:.0f} ms (target p99 ≤ 1 s)"
    )
    for warning in sorted(WARNINGS):
        print(f"a step warned: {warning}")
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores, shared)")


if __name__ == "__main__":
    main()
