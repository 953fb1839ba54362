"""A small real web app in a git repository for deploy tests: tests/support/switch_app.py
answering the VERSION of the commit it was built from, with a build, a release command
and a health path in its onwatch.toml; and the machine (registered for every test in
tests/conftest.py) that such tests deploy it on; and a machine for tests of the switch
alone, with a site in its Caddy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, Organization
from onwatch.deploys import caddy, releases, services
from onwatch.deploys.models import Service
from onwatch.deploys.switch import Machine
from tests.support.deploys import commit, service_for
from tests.support.switching import APP, QUICK_GATE, QUICK_HEALTH_INTERVAL, own_machine, site

# The jobs a deploy runs through: its pipeline, then the deploy that waited for it.
KINDS = [services.KIND, services.DEPLOY_KIND]

TOML = """[build]
command = "echo built > built.txt"

[test]
command = "python3 -c 'print(1)'"

[release]
command = "{release}"

[web]
command = "RELEASE=$(cat VERSION) exec python3 app.py"

[health]
path = "/health"
"""
# The release command says which version it migrated, in the deploy's log (it runs in the
# sandbox, which sees nothing of the test's own folders).
RELEASE_OK = "echo migrated $(cat VERSION)"
RELEASE_FAILS = "echo migration 0003 cannot add the column >&2; exit 3"


def app_files(version: str, release: str = RELEASE_OK, health: str = "") -> dict[str, str]:
    files = {
        "onwatch.toml": TOML.format(release=release),
        "app.py": APP.read_text(),
        "VERSION": version + "\n",
    }
    if health:
        files["onwatch.toml"] = files["onwatch.toml"].replace(
            "exec python3", f"HEALTH={health} exec python3"
        )
    return files


# onwatch's own, as it runs outside the tests (read before quick_switches changes them).
OWN_GATE, OWN_HEALTH_INTERVAL, OWN_SETTLE = (
    releases.GATE,
    caddy.HEALTH_INTERVAL,
    caddy.SETTLE_SECONDS,
)


@pytest.fixture(autouse=True, scope="session")
def quick_switches() -> Iterator[None]:
    """Deploys' switches as tests.support.switching.QUICK_GATE says."""
    margin = caddy.SETTLE_SECONDS - 2 * caddy.HEALTH_INTERVAL
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(releases, "GATE", QUICK_GATE)
        patch.setattr(caddy, "HEALTH_INTERVAL", QUICK_HEALTH_INTERVAL)
        patch.setattr(caddy, "SETTLE_SECONDS", 2 * QUICK_HEALTH_INTERVAL + margin)
        yield


@pytest.fixture
def own_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """onwatch's own gate and Caddy health interval, for a test whose Caddy another onwatch
    process configures too, or whose subject is a moment the gate's length sets."""
    monkeypatch.setattr(releases, "GATE", OWN_GATE)
    monkeypatch.setattr(caddy, "HEALTH_INTERVAL", OWN_HEALTH_INTERVAL)
    monkeypatch.setattr(caddy, "SETTLE_SECONDS", OWN_SETTLE)


def built_marker(directory: str) -> Path:
    return Path(directory) / "built.txt"


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    """A machine of its own (supervisord and Caddy) that onwatch's deploys switch on."""
    with own_machine() as m:
        monkeypatch.setattr(releases, "machine", lambda: m)
        yield m


@pytest.fixture
def caddy_machine() -> Iterator[Machine]:
    """A machine of its own with supervisord and Caddy running, for tests of the switch
    itself (deploys/switch.py): unlike `machine`, onwatch's deploys do not use it."""
    with own_machine() as m:
        m.ensure_running()
        yield m


@pytest.fixture
def caddy_site(caddy_machine: Machine) -> caddy.Site:
    """shop.test in that machine's Caddy, with two free slot ports and nothing live yet."""
    s = site(caddy_machine)
    caddy_machine.caddy.put_site(s)
    return s


@pytest.fixture
def shop(org: Organization, tmp_path: Path) -> Service:
    """A service whose repository holds the switch app at "v1", deployed at shop.test."""
    commit(tmp_path / "repo", app_files("v1"), "First version")
    service = service_for(org, str(tmp_path / "repo"))
    services.set_domain(service, "shop.test", True, SYSTEM)
    return service


def run_in_thread(job: Job) -> threading.Thread:
    """`job` run by a worker thread of this process (claimed already), started: a test
    then acts while it runs. The thread's own database connection is closed at its end."""

    def work() -> None:
        try:
            jobs.run(job, "test-worker")
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    return worker
