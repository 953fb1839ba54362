"""Automatic rollback: how soon onwatch finds a release that answers 20 % of its requests
with 500, and how soon the release before it serves again.

    .venv/bin/python bench/autorollback.py [--runs 3] [--served 0] [--ssh [--new-link]]

Sets up onwatch in this process on a data directory of its own (SQLite, or a fresh
PostgreSQL database when DATABASE_URL is set, as the tests do), with its own supervisord
and Caddy, and one service: the small app of tests/support/switch_app.py in a git
repository. Clients send requests without pause (tests/support/load.py). Each run
deploys a healthy release, lets its watch count its answers for --served seconds (its
baseline, beside the second before the next switch), then deploys one that fails every
fifth answer, and runs the jobs a worker would (the deploy, the watch's looks, the
rollback it asks for) until the watch has ended. Prints, per run and as medians:
detection (the failing release went live → the watch found it clearly worse; target
≤ 10 s) and restore (found → the release before it took requests again; target ≤ 5 s),
and the evidence the watch gave. With --ssh the service runs on an SSH host instead: a real
sshd on loopback with its own supervisord and Caddy (tests/support/ssh_hosts.py), read by
the watch through the host's agent, over a connection kept between looks (--new-link: one
opened for each look, to compare).

bench/deploys.py imports `measure` (with onwatch already set up in its process, and a
machine and service of its own, or none: then it makes them as this script does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Times:
    detected: float  # the failing release went live → found clearly worse
    restored: float  # found → the release before it takes requests again
    verdict: str


def measure(
    runs: int = 3,
    machine: Any = None,
    service: Any = None,
    repo: Path | None = None,
    served: float = 0.0,
    port: int | None = None,
) -> list[Times]:
    """`runs` failing releases, each after a healthy one watched for `served` seconds,
    under steady load; onwatch must be set up in this process (django.setup, migrated).
    Without a machine and service, makes its own (and stops what it started afterwards)."""
    with ExitStack() as stack:
        if machine is None or service is None or repo is None:
            machine, service, repo = stack.enter_context(_shop())
        return [_one(machine, service, repo, n, served, port) for n in range(1, runs + 1)]


def _one(machine: Any, service: Any, repo: Path, n: int, served: float, port: int | None) -> Times:
    from onwatch.deploys.models import WatchState
    from tests.support.load import Load
    from tests.support.switching import listen_port

    load = Load(port or listen_port(machine), service.domain).start()
    try:
        _looked(_deploy(service, repo, f"good{n}", 0), served)
        time.sleep(1)  # some answers of the healthy release just before the next switch
        failing = _deploy(service, repo, f"bad{n}", 5)
        watch = _watched(failing)
    finally:
        load.stop()
    if watch.state != WatchState.ROLLED_BACK or watch.rollback is None:
        raise SystemExit(f"run {n}: the watch ended {watch.state}: {watch.verdict}")
    return Times(
        (watch.detected_at - failing.switched_at).total_seconds(),
        # The last host's switch: users got the release before everywhere only then.
        (_everywhere(watch.rollback) - watch.detected_at).total_seconds(),
        watch.verdict,
    )


def _everywhere(rollback: Any) -> Any:
    from onwatch.deploys import services

    return services.live_everywhere_at(rollback)


def _deploy(service: Any, repo: Path, version: str, fail_every: int) -> Any:
    from onwatch.core import jobs
    from onwatch.core.audit import SYSTEM
    from onwatch.deploys import services
    from onwatch.deploys.models import State
    from tests.support.deploys import commit
    from tests.support.releases import app_files

    files = app_files(version)
    if fail_every:
        toml = files["onwatch.toml"]
        files["onwatch.toml"] = toml.replace(
            "exec python3", f"FAIL_EVERY={fail_every} exec python3"
        )
    commit(repo, files, f"Version {version}")
    deploy = services.queue_deploy(service, SYSTEM, "cli")
    jobs.run_pending(kinds=[services.DEPLOY_KIND])
    deploy.refresh_from_db()
    if deploy.state != State.SUCCEEDED:
        raise SystemExit(f"deploy of {version} {deploy.state}: {deploy.reason}")
    return deploy


def _watched(deploy: Any) -> Any:
    from onwatch.core import jobs
    from onwatch.deploys import services
    from onwatch.deploys.models import Watch, WatchState

    watch = Watch.objects.get(deploy=deploy)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while watch.state in (WatchState.WATCHING, WatchState.ROLLING_BACK):
        if time.monotonic() > deadline:
            raise SystemExit(f"the watch of deploy #{deploy.pk} did not end: {watch.verdict}")
        jobs.run_pending(kinds=[services.WATCH_KIND, services.DEPLOY_KIND])
        time.sleep(0.05)
        watch.refresh_from_db()
    return watch


def _looked(deploy: Any, seconds: float) -> None:
    """The watch of the healthy release counts its answers for `seconds`, as a worker's
    looks would: the minutes the failing release after it is judged against."""
    from onwatch.core import jobs
    from onwatch.deploys import services

    until = time.monotonic() + seconds
    while time.monotonic() < until:
        jobs.run_pending(kinds=[services.WATCH_KIND])
        time.sleep(0.2)


@contextmanager
def _shop() -> Iterator[tuple[Any, Any, Path]]:
    """A machine of its own (supervisord, Caddy) and a service "shop" at shop.test."""
    from onwatch.core.audit import SYSTEM
    from onwatch.deploys import releases, services
    from tests.support.deploys import service_for
    from tests.support.fixtures import make_org
    from tests.support.switching import own_machine

    with own_machine() as machine, tempfile.TemporaryDirectory() as tmp:
        before = releases.machine
        releases.machine = lambda: machine
        try:
            repo = Path(tmp) / "repo"
            service = service_for(make_org(), str(repo))
            services.set_domain(service, "shop.test", False, SYSTEM)
            yield machine, service, repo
        finally:
            releases.machine = before


@contextmanager
def _on_ssh_host() -> Iterator[tuple[Any, Any, Path, int]]:
    """The shop on an SSH host alone (built here, on a machine of its own); the port its
    Caddy answers on."""
    from onwatch.core.audit import SYSTEM
    from onwatch.deploys import services
    from tests.support.several import checked_ssh_host
    from tests.support.ssh_hosts import ssh_host

    with _shop() as (machine, service, repo), ssh_host() as made:
        host = checked_ssh_host(service.org, made)
        services.set_service_hosts(service, [host], SYSTEM)
        yield machine, service, repo, made.options.http_port


@contextmanager
def _onwatch() -> Iterator[None]:
    """onwatch in this process, on a data directory and database of its own."""
    from tests.support.procs import isolated

    with tempfile.TemporaryDirectory() as tmp, isolated(Path(tmp)) as env:
        os.environ.update(env)
        Path(env["ONWATCH_DATA_DIR"]).mkdir(mode=0o700, parents=True)
        os.environ["DJANGO_SETTINGS_MODULE"] = "onwatch.settings"
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from onwatch.core.keys import ensure_keyring

        ensure_keyring()  # as `onwatch up` does on a fresh install: secrets are encrypted
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--served", type=float, default=0.0, help="seconds the healthy release is watched first"
    )
    parser.add_argument("--ssh", action="store_true", help="the service on an SSH host")
    parser.add_argument(
        "--new-link", action="store_true", help="with --ssh: a new connection for each look"
    )
    args = parser.parse_args()
    with _onwatch():
        if not args.ssh:
            found = measure(args.runs, served=args.served)
        else:
            from onwatch.deploys import watch

            if args.new_link:
                watch.LINK_IDLE_SECONDS = -1.0  # each look's connection closed after it
            reads = _timed_reads()
            with _on_ssh_host() as (machine, service, repo, port):
                found = measure(args.runs, machine, service, repo, args.served, port)
            link = "a new connection each look" if args.new_link else "the connection kept"
            median, worst = statistics.median(reads), max(reads)
            print(
                f"host read, median      {median:.3f} s of {len(reads)} ({link}; worst "
                f"{worst:.3f} s; a watch's first read signs in)"
            )
    for n, t in enumerate(found, 1):
        print(
            f"run {n}: detected {t.detected:.1f} s after the switch, "
            f"restored {t.restored:.1f} s later"
        )
    print(f"evidence (last run)   {found[-1].verdict}")
    summary("detection", [t.detected for t in found], 10)
    summary("restore", [t.restored for t in found], 5)


def _timed_reads() -> list[float]:
    """The seconds each read of the host's count takes (watch.read_host), as they come."""
    from onwatch.deploys import watch

    took: list[float] = []
    read = watch.read_host

    def timed(*args: Any) -> Any:
        started = time.monotonic()
        try:
            return read(*args)
        finally:
            took.append(time.monotonic() - started)

    watch.read_host = timed  # type: ignore[assignment]
    return took


def summary(what: str, seconds: list[float], target: float) -> None:
    median, worst = statistics.median(seconds), max(seconds)
    print(f"{what + ', median':<22}{median:.1f} s (target ≤ {target:g} s; worst {worst:.1f} s)")


if __name__ == "__main__":
    main()
