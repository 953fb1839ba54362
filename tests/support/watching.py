"""Deploys that are watched afterwards (deploys/watch.py): the switch app committed and
deployed through the real deploy job, clients that load shop.test meanwhile, and the
watch's looks (and the rollback it asks for) run here as a worker would run them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.deploys import services
from onwatch.deploys.models import Deploy, Service, State, Watch, WatchState
from onwatch.deploys.services import DEPLOY_KIND, WATCH_KIND
from onwatch.deploys.switch import Machine
from tests.support.deploys import commit
from tests.support.load import Load
from tests.support.releases import app_files
from tests.support.switching import listen_port

ENDED = (
    WatchState.PASSED,
    WatchState.NOT_JUDGED,
    WatchState.ROLLED_BACK,
    WatchState.FAILING,
    WatchState.REPLACED,
)


def deploy(
    service: Service, repo: Path, version: str, fail_every: int = 0, slow_ms: int = 0
) -> Deploy:
    """Commit `version` of the app (every `fail_every`-th answer a 500, each `slow_ms`
    longer) and deploy it."""
    files = app_files(version)
    env = f"FAIL_EVERY={fail_every} SLOW_MS={slow_ms}"
    files["onwatch.toml"] = files["onwatch.toml"].replace("exec python3", f"{env} exec python3")
    commit(repo, files, f"Version {version}")
    done = services.queue_deploy(service, SYSTEM, "cli")
    jobs.run_pending(kinds=[DEPLOY_KIND])
    done.refresh_from_db()
    assert done.state == State.SUCCEEDED, (done.reason, done.steps)
    return done


def watched(deploy: Deploy, seconds: float = 60) -> Watch:
    """Run the watch's looks (and the rollback it asks for) until it has ended."""
    watch = Watch.objects.get(deploy=deploy)
    deadline = time.monotonic() + seconds
    while watch.state not in ENDED and time.monotonic() < deadline:
        jobs.run_pending(kinds=[WATCH_KIND, DEPLOY_KIND])
        time.sleep(0.1)
        watch.refresh_from_db()
    assert watch.state in ENDED, (watch.state, watch.verdict)
    return watch


@contextmanager
def loaded(machine: Machine) -> Iterator[Load]:
    load = Load(listen_port(machine), "shop.test").start()
    try:
        yield load
    finally:
        load.stop()
