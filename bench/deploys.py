"""Deploys and rollbacks of a small real web app behind Caddy, under steady load, through
onwatch's own deploy path.

    .venv/bin/python bench/deploys.py [--deploys 100] [--clients 32] [--no-autorollback]

onwatch runs in this process on a data directory of its own (SQLite, or a fresh
PostgreSQL database when DATABASE_URL is set, as the tests do), with its own supervisord
and Caddy on free loopback ports. Its one service is a git repository holding the app of
tests/support/switch_app.py, which answers its version in an X-Release header. Each
deploy commits a new version and queues it (services.queue_deploy), each rollback queues
one to the previous release (services.queue_rollback); the deploy job runs them as a
worker does (checkout, build and release command in the sandbox, the gated switch).
After a first deploy, --deploys deploys and as many rollbacks alternate, while --clients
kept-alive clients (a process of their own, so that they never wait for this one) send
GETs without pause and record every answer.

Prints requests served, failed requests (target 0), answers from an old version after
its switch had ended (target 0), p99 latency of requests sent during switches against
those sent outside them (added: target ≤ 100 ms), rollback time (queued → Caddy may send
the release requests, as onwatch records it, and → the clients get only that release:
p50 and max, target ≤ 3 s plus the release's own start-up, printed apart),
and whether onwatch's counts on each deploy (served, failed, mixed) agree with the
clients'. Then bench/autorollback.py's figures, when it exists. The load average is
printed too: the machine may be shared.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import free_port, isolated  # noqa: E402
from tests.support.template import RUN_VARIABLE  # noqa: E402

DOMAIN = "shop.test"
P99_TARGET = 0.100
ROLLBACK_TARGET = 3.0
# A client gives up on an answer after this long.
TIMEOUT = 30.0


# --- the clients: a process of their own ------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request as a client saw it: sent (Unix seconds), took (seconds), the status
    (0: no answer at all) and the X-Release header (or what went wrong)."""

    sent: float
    took: float
    status: int
    release: str

    @property
    def done(self) -> float:
        return self.sent + self.took


def client(port: int, stop: threading.Event, out: list[str]) -> None:
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        sent, started = time.time(), time.perf_counter()
        try:
            connection.request("GET", "/", headers={"Host": DOMAIN})
            answer = connection.getresponse()
            answer.read()
            status, release = answer.status, answer.getheader("X-Release") or "-"
        except (OSError, http.client.HTTPException) as e:
            status, release = 0, type(e).__name__
            connection.close()
            connection = None
        out.append(f"{sent:.6f} {time.perf_counter() - started:.6f} {status} {release}")
        if not status:
            stop.wait(0.01)  # Caddy not answering at all: no busy loop


def clients_main(port: int, count: int, path: str) -> None:
    """Send until stdin closes, then write every answer to `path`, one a line."""
    stop = threading.Event()
    logs: list[list[str]] = [[] for _ in range(count)]
    threads = [threading.Thread(target=client, args=(port, stop, log)) for log in logs]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join(timeout=40)
    with open(path, "w") as f:
        for log in logs:
            f.write("\n".join(log) + "\n" if log else "")


@contextmanager
def clients(port: int, count: int, folder: Path) -> Iterator[list[Answer]]:
    """The clients send while the block runs; the list holds their answers after it."""
    path = folder / "answers.txt"
    argv = [sys.executable, __file__, "--as-clients", str(port), str(count), str(path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=ROOT)
    answers: list[Answer] = []
    try:
        yield answers
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=120)
    answers.extend(read_answers(path))


def read_answers(path: Path) -> list[Answer]:
    found = []
    for line in path.read_text().splitlines():
        sent, took, status, release = line.split(" ", 3)
        found.append(Answer(float(sent), float(took), int(status), release))
    return sorted(found, key=lambda a: a.sent)


# --- onwatch, in this process ------------------------------------------------------------


@contextmanager
def onwatch(folder: Path) -> Iterator[int]:
    """onwatch set up on a data directory of its own; the port Caddy listens on."""
    caddy_port = free_port()
    extra = {
        "ONWATCH_CADDY_HTTPS": "false",
        "ONWATCH_CADDY_HTTP_PORT": str(caddy_port),
        "ONWATCH_CADDY_HTTPS_PORT": str(free_port()),
        "ONWATCH_CADDY_HEALTH_PORT": str(free_port()),
        "ONWATCH_SERVICE_USER_PREFIX": f"owb{os.getpid()}-",
        "SECRET_KEY": "bench-only-" + "k" * 50,
    }
    # Within a test run, from its migrated template, as the tests start (migrations take
    # most of a minute on a loaded machine); on its own, from nothing.
    caller = dict(os.environ)
    with isolated(folder, RUN_VARIABLE in os.environ, **extra) as env:
        # Its whole environment: none of the caller's onwatch settings (a test's key file).
        os.environ.clear()
        os.environ.update(env)
        from onwatch.startup import prepare

        try:
            prepare(migrate=True)
            yield caddy_port
        finally:
            stop_machine()
            remove_service_users(extra["ONWATCH_SERVICE_USER_PREFIX"])
            from django.db import connections

            connections.close_all()
            os.environ.clear()
            os.environ.update(caller)


def stop_machine() -> None:
    from onwatch.deploys.switch import this_machine
    from tests.support.switching import stop_everything

    stop_everything(this_machine())


def remove_service_users(prefix: str) -> None:
    if os.geteuid() != 0:
        return
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


@dataclass
class Switched:
    """One deploy or rollback as onwatch recorded it, with the versions on each side."""

    kind: str
    new: str
    old: str
    row: Any  # its Deploy

    def at(self, step: str, end: str = "ended") -> float:
        found = [s for s in self.row.steps if s["name"] == step]
        if not found or not found[-1][end]:
            raise SystemExit(f"{self.kind} #{self.row.pk} has no {step} step: {self.row.steps}")
        return datetime.fromisoformat(found[-1][end]).timestamp()

    def took(self, step: str) -> float:
        return self.at(step) - self.at(step, "started")

    @property
    def window(self) -> tuple[float, float]:
        """From when Caddy could send the new version requests until the old one stopped."""
        return self.at("switch", "started"), self.at("drain")


class Shop:
    """The bench's service: commits versions and makes them live, as a person would."""

    def __init__(self, folder: Path) -> None:
        from onwatch.core.audit import SYSTEM
        from onwatch.core.models import Organization
        from onwatch.deploys import services
        from tests.support.deploys import commit, service_for

        self.repo, self.commit, self.services = folder / "repo", commit, services
        self.actor, self.versions = SYSTEM, {}  # release id -> version
        self.commit(self.repo, self.files("v0"), "Version v0")
        org = Organization.objects.create(name="Bench")
        self.service = service_for(org, str(self.repo))
        services.set_domain(self.service, DOMAIN, False, SYSTEM)
        self.live = ""

    def files(self, version: str) -> dict[str, str]:
        from tests.support.releases import app_files

        return app_files(version)

    def deploy(self, version: str) -> Switched:
        sha = self.commit(self.repo, self.files(version), f"Version {version}")
        row = self.services.queue_deploy(self.service, self.actor, "cli", sha)
        return self.ran(row, "deploy", version)

    def rollback(self) -> Switched:
        row = self.services.queue_rollback(self.service, self.actor, "cli")
        return self.ran(row, "rollback", self.versions[row.release_id])

    def ran(self, row: Any, kind: str, version: str) -> Switched:
        from onwatch.core import jobs
        from onwatch.deploys.models import State

        jobs.run_pending(kinds=[self.services.DEPLOY_KIND])
        row.refresh_from_db()
        if row.state != State.SUCCEEDED:
            raise SystemExit(f"{kind} #{row.pk} of {version} {row.state}: {row.reason}")
        self.versions[row.release_id] = version
        done, self.live = Switched(kind, version, self.live, row), version
        return done


# --- what the figures are -----------------------------------------------------------------


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Timeline:
    """The clients' answers in the order their requests were sent."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = sorted(answers, key=lambda a: a.sent)
        self.sent = [a.sent for a in self.answers]

    def sent_between(self, start: float, end: float) -> list[Answer]:
        lo, hi = bisect.bisect_left(self.sent, start), bisect.bisect_right(self.sent, end)
        return self.answers[lo:hi]


def late_answers(answers: Timeline, done: list[Switched]) -> int:
    """Answers from any other version to requests sent after a switch had ended (its old
    release stopped) and before the next one began."""
    late = 0
    for n, record in enumerate(done):
        end = done[n + 1].window[0] if n + 1 < len(done) else float("inf")
        after = answers.sent_between(record.window[1], end)
        late += sum(1 for a in after if a.status == 200 and a.release != record.new)
    return late


def latencies(answers: Timeline, done: list[Switched]) -> tuple[list[float], list[float]]:
    """The latencies of requests sent during switches, and of those sent outside them."""
    inside = [a for r in done for a in answers.sent_between(*r.window)]
    during = {id(a) for a in inside}
    return [a.took for a in inside], [a.took for a in answers.answers if id(a) not in during]


def only_new_from(answers: Timeline, record: Switched) -> float:
    """From when (sent, Unix seconds) the clients got only the new version: the end of the
    switch for a person, later than onwatch's switched_at (Caddy may keep choosing the old
    slot until it goes off)."""
    queued = record.row.created_at.timestamp()
    span = answers.sent_between(queued, record.window[1])
    others = [a.sent for a in span if a.status == 200 and a.release != record.new]
    return max(others, default=queued)


@dataclass
class Agreement:
    """onwatch's counts of one switch against the clients'. Caddy counts a request it
    started while counting (from before the switch step to after the drain step, before
    the deploy ended) once its line is written, which onwatch waits for. So onwatch must
    count at least the requests sent and answered within the switch and drain steps, and
    at most those that overlap the health gate's end to the deploy's end."""

    record: Switched
    low: tuple[int, int, int]
    high: tuple[int, int, int]

    @property
    def onwatch(self) -> tuple[int, int, int] | None:
        row = self.record.row
        if row.switch_served is None:
            return None
        return row.switch_served, row.switch_failed + row.switch_app_errors, row.switch_mixed

    @property
    def agrees(self) -> bool:
        counted = self.onwatch
        return counted is not None and all(
            lo <= n <= hi for lo, n, hi in zip(self.low, counted, self.high, strict=True)
        )

    def __str__(self) -> str:
        row = self.record.row
        said = self.onwatch or f"not measured ({row.felt_unmeasured})"
        return (
            f"{self.record.kind} #{row.pk}: onwatch (served, failed, mixed) {said}, "
            f"clients between {self.low} and {self.high}"
        )


def agreement(answers: Timeline, record: Switched) -> Agreement:
    from onwatch.deploys import caddy

    row = record.row
    # Caddy sends the old release nothing new from SETTLE_SECONDS after its slot went off.
    old_off = record.at("drain", "started") + caddy.SETTLE_SECONDS

    def counts(within: list[Answer], mixed_from: float) -> tuple[int, int, int]:
        mixed = sum(1 for a in within if a.release == record.old and a.sent > mixed_from)
        return len(within), sum(1 for a in within if a.status != 200), mixed

    start, end = record.window
    inside = [a for a in answers.sent_between(start, end) if a.done <= end]
    start, end = record.at("health gate"), row.ended_at.timestamp()
    overlapping = [a for a in answers.sent_between(start - TIMEOUT, end) if a.done >= start]
    # An old answer onwatch counts as mixed was sent after the old slot went off, so it
    # cannot have been answered within the drain step: no lower bound but none.
    return Agreement(record, counts(inside, float("inf")), counts(overlapping, old_off))


# --- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="ow-bd-"))
    folder.chmod(0o711)
    try:
        return deploys_and_rollbacks(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def deploys_and_rollbacks(args: argparse.Namespace, folder: Path) -> list[str]:
    with onwatch(folder / "onwatch") as port:
        service = Shop(folder)
        service.deploy("v1")
        done: list[Switched] = []
        with clients(port, args.clients, folder) as answers:
            started = time.monotonic()
            for n in range(2, args.deploys + 2):
                done.append(service.deploy(f"v{n}"))
                done.append(service.rollback())
            seconds = time.monotonic() - started
        return report(answers, done, seconds, args.clients)


def report(got: list[Answer], done: list[Switched], seconds: float, count: int) -> list[str]:
    answers = Timeline(got)
    failed = [a for a in got if a.status != 200]
    late = late_answers(answers, done)
    inside, outside = latencies(answers, done)
    added = p(inside, 0.99) - p(outside, 0.99)
    print(f"load average                 {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"deploys, rollbacks           {len(done) // 2}, {len(done) // 2}")
    print(f"clients                      {count} kept alive, {seconds:.0f} s")
    print(f"requests served              {len(got) - len(failed)}")
    print(f"failed requests              {len(failed)} {errors(failed)}")
    print(f"old answers after a switch   {late}")
    print(
        f"p99 latency                  {ms(p(inside, 0.99))} during switches "
        f"({len(inside)} requests), {ms(p(outside, 0.99))} outside ({len(outside)})"
    )
    print(f"p99 added during switches    {ms(added)}")
    beyond = rollback_times(answers, [r for r in done if r.kind == "rollback"])
    agreements = [agreement(answers, r) for r in done]
    agreeing = [a for a in agreements if a.agrees]
    print(f"onwatch's counts agree       {len(agreeing)} of {len(agreements)} switches")
    for disagreeing in [a for a in agreements if not a.agrees][:5]:
        print(f"  disagrees: {disagreeing}")
    print(f"onwatch counted              {totals(done)}")
    return verdicts(len(failed), late, added, beyond, len(agreeing) == len(agreements))


def rollback_times(answers: Timeline, rollbacks: list[Switched]) -> float:
    """Prints them; the longest beyond the release's own start-up, as the clients saw it."""
    to_live = [r.row.switched_at.timestamp() - r.row.created_at.timestamp() for r in rollbacks]
    to_users = [only_new_from(answers, r) - r.row.created_at.timestamp() for r in rollbacks]
    startup = [r.took("start") + r.took("health gate") for r in rollbacks]
    beyond = [t - s for t, s in zip(to_users, startup, strict=True)]
    print(f"rollback, queued to live     p50 {secs(p(to_live, 0.5))}, max {secs(max(to_live))}")
    print(
        f"  to only it answering       p50 {secs(p(to_users, 0.5))}, max {secs(max(to_users))}"
        " (the clients')"
    )
    print(f"  of it the release start-up p50 {secs(p(startup, 0.5))}, max {secs(max(startup))}")
    print(f"  less its start-up          p50 {secs(p(beyond, 0.5))}, max {secs(max(beyond))}")
    print(f"rollback, queued to drained  p50 {secs(p(ended(rollbacks), 0.5))}")
    return max(beyond)


def ended(done: list[Switched]) -> list[float]:
    return [r.row.ended_at.timestamp() - r.row.created_at.timestamp() for r in done]


def totals(done: list[Switched]) -> str:
    rows = [r.row for r in done]
    unmeasured = sum(1 for row in rows if row.switch_served is None)
    served = sum(row.switch_served or 0 for row in rows)
    failed = sum((row.switch_failed or 0) + (row.switch_app_errors or 0) for row in rows)
    mixed = sum(row.switch_mixed or 0 for row in rows)
    return (
        f"{served} served, {failed} failed, {mixed} mixed during the switches"
        f"{f'; {unmeasured} not measured' if unmeasured else ''}"
    )


def errors(failed: list[Answer]) -> str:
    kinds: dict[str, int] = {}
    for a in failed:
        what = f"HTTP {a.status}" if a.status else a.release
        kinds[what] = kinds.get(what, 0) + 1
    return str(kinds) if kinds else ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def verdicts(failed: int, late: int, added: float, beyond: float, agree: bool) -> list[str]:
    checks = [
        ("failed requests 0", failed == 0),
        ("old answers 0", late == 0),
        (f"p99 added ≤ {ms(P99_TARGET)}", added <= P99_TARGET),
        (f"rollback ≤ {secs(ROLLBACK_TARGET)} plus start-up", beyond <= ROLLBACK_TARGET),
        ("onwatch's counts agree", agree),
    ]
    return [f"{what}: {'met' if ok else 'MISSED'}" for what, ok in checks]


def autorollback(skip: bool) -> str:
    if skip:
        return "automatic rollback: not measured (--no-autorollback)"
    if importlib.util.find_spec("bench.autorollback") is None:
        return "automatic rollback: not measured: bench/autorollback.py missing"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "autorollback.py")], cwd=ROOT)
    if done.returncode:
        return f"automatic rollback: bench/autorollback.py ended with {done.returncode}"
    return "automatic rollback: figures above, from bench/autorollback.py"


def main() -> None:
    if sys.argv[1:2] == ["--as-clients"]:
        clients_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=100, help="and as many rollbacks")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--no-autorollback", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.deploys <= 10_000:
        parser.error("--deploys must be between 1 and 10000")
    if not 1 <= args.clients <= 512:
        parser.error("--clients must be between 1 and 512")
    verdict = run(args)
    print(autorollback(args.no_autorollback))
    print(f"verdict                      {'; '.join(verdict)}")


if __name__ == "__main__":
    main()
