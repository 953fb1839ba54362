"""Real git repositories for pipeline tests: a tiny Python project whose test passes or
fails, committed on a branch, in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.db import OperationalError
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState, Organization
from onwatch.deploys import services, workdir
from onwatch.deploys.models import Deploy, Host, Release, ReleaseState, Service, State

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ana Dev",
    "GIT_AUTHOR_EMAIL": "ana@example.com",
    "GIT_COMMITTER_NAME": "Ana Dev",
    "GIT_COMMITTER_EMAIL": "ana@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
}
TOML = '[test]\ncommand = "python3 -m unittest -v"\n'


def project(passing: bool = True, extra: str = "") -> dict[str, str]:
    """A Python project tested by `python3 -m unittest` (no network needed)."""
    check = "1 + 1, 2" if passing else "1 + 1, 3"
    return {
        "onwatch.toml": TOML,
        "test_app.py": (
            "import unittest\n\n\nclass AppTest(unittest.TestCase):\n"
            f"    def test_sum(self):\n{extra}        self.assertEqual({check})\n"
        ),
    }


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str, branch: str = "main") -> str:
    """Write `files` into `repo` (made on first use) and commit them on `branch`; the sha."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "--quiet", "--initial-branch", branch)
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def service_for(
    org: Organization, url: str, branch: str = "main", secrets: dict[str, str] | None = None
) -> Service:
    fields = services.ServiceFields(name="shop", git_url=url, branch=branch)
    return services.add_service(org, fields, SYSTEM, secrets)


PYPROJECT = """[project]
name = "shop"
version = "0.1.0"
requires-python = ">=3.11"

[dependency-groups]
dev = ["pytest"]
"""
PYTESTS = (
    "def test_sum():\n    assert 1 + 1 == 2\n\n\n"
    "def test_total():\n    assert sum([1, 2]) == 4, 'the total is off'\n"
)


def uv_project() -> dict[str, str]:
    """A uv project with no onwatch.toml (detected: uv sync, uv run pytest) whose pytest
    run has one passing and one failing test. Its uv.lock is made by onwatch's own uv,
    which asks PyPI (the one network access tests need)."""
    uv = workdir.onwatch_uv()
    assert uv is not None, "no uv where onwatch runs"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pyproject.toml").write_text(PYPROJECT)
        env = {**os.environ, "UV_CACHE_DIR": str(Path(tmp) / "cache")}
        subprocess.run([uv, "lock", "--quiet"], cwd=tmp, env=env, check=True)
        lock = (Path(tmp) / "uv.lock").read_text()
    return {"pyproject.toml": PYPROJECT, "uv.lock": lock, "test_app.py": PYTESTS}


NODE_TEST = """const test = require('node:test');
const assert = require('node:assert');
const pad = require('pad-local');

test('pads the total', () => { assert.strictEqual(pad('7', 3), '  7'); });
"""


def node_project(repo: Path) -> None:
    """A Node project in `repo` with no onwatch.toml (detected: npm ci, npm test), whose
    one dependency is a tarball in the repository: it installs without the internet. Its
    package-lock.json is made by the real npm, offline."""
    dep = repo / "vendor" / "pad-local"
    dep.mkdir(parents=True)
    (dep / "package.json").write_text('{"name": "pad-local", "version": "1.0.0"}\n')
    (dep / "index.js").write_text("module.exports = (s, n) => String(s).padStart(n);\n")
    npm = ["npm", "--offline", "--no-audit", "--no-fund", "--loglevel=error"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "npm_config_cache": cache}
        subprocess.run([*npm, "pack", "--pack-destination", ".."], cwd=dep, env=env, check=True)
        (dep / "package.json").unlink()
        (dep / "index.js").unlink()
        dep.rmdir()
        package = {
            "name": "shop",
            "version": "1.0.0",
            "private": True,
            "scripts": {"test": "node --test"},
            "dependencies": {"pad-local": "file:vendor/pad-local-1.0.0.tgz"},
        }
        (repo / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        (repo / "app.test.js").write_text(NODE_TEST)
        lock = [*npm, "install", "--package-lock-only"]
        subprocess.run(lock, cwd=repo, env=env, check=True, capture_output=True)


def beside_a_writer[T](call: Callable[[], T]) -> T:
    """`call` while a job thread writes: the SQLite test database is shared-cache in memory,
    which answers "table is locked" at once instead of waiting as onwatch's WAL file does."""
    for _ in range(40):
        try:
            return call()
        except OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(0.05)
    return call()


def dead_deploy(service: Service) -> Deploy:
    """A deploy of `service` whose worker claimed it, started, then stopped answering
    (killed, machine down): its job still RUNNING, its lease run out a minute ago."""
    deploy = services.queue_deploy(service, SYSTEM, "cli")
    services.deploy_started(deploy)
    gone = timezone.now() - timedelta(minutes=1)
    assert deploy.job_id is not None
    Job.objects.filter(pk=deploy.job_id).update(
        state=JobState.RUNNING, worker="gone:1:1", lease_until=gone, attempts=1
    )
    return deploy


def built_before_a_host_joined(org: Organization) -> tuple[Service, Host, Release, Release]:
    """shop: release 1 built and made live on this machine alone; then an SSH host joined
    (its key pinned; never reached) and release 2 was built on both and made live. Written
    as the deploy job writes its timeline, which says where each release was built."""
    service = service_for(org, "/srv/git/shop.git")
    services.set_domain(service, "shop.example.com", False, SYSTEM)
    web1 = Host.objects.create(
        org=org,
        name="deploy@10.0.0.7",
        user="deploy",
        address="10.0.0.7",
        known_hosts="10.0.0.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE",
        ready=True,
        checked_at=timezone.now(),
    )
    one, two = (
        Release.objects.create(service=service, commit=c * 40, state=ReleaseState.READY)
        for c in "ab"
    )
    made_live(service, one, [{"name": "build"}], timedelta(minutes=5))
    services.set_service_hosts(service, [services.this_machine(org), web1], SYSTEM)
    there = [f"send to {web1.name}", "build on this machine", f"build on {web1.name}"]
    made_live(service, two, [{"name": n} for n in there], timedelta(minutes=1))
    return service, web1, one, two


def made_live(
    service: Service, release: Release, steps: list[dict[str, str]], ago: timedelta
) -> None:
    at = timezone.now() - ago
    Deploy.objects.create(
        service=service,
        release=release,
        trigger="ui",
        state=State.SUCCEEDED,
        steps=steps,
        switched_at=at,
        ended_at=at,
    )


def ready_ssh_host(org: Organization, user: str, port: int) -> Host:
    """A real sshd on loopback added as people add it (its host key pinned, onwatch's key
    authorized by the caller) and marked as a passed check leaves it."""
    host = services.add_host(org, services.HostFields(address=f"{user}@127.0.0.1:{port}"), SYSTEM)
    Host.objects.filter(pk=host.pk).update(ready=True, checked_at=timezone.now())
    host.refresh_from_db()
    return host
