"""`onwatch services domain`, `deploy`, `rollback` and `releases` as people run them: each
command its own process, against a real worker (stopped and started again between the
deploy and the rollback, as an onwatch restart would), supervisord and Caddy."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onwatch.core.models import Organization
from onwatch.deploys import deploy_cli, services
from onwatch.deploys.models import Deploy, Release, ReleaseState, State, Watch, WatchState
from onwatch.deploys.switch import Machine
from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.deploys import commit, service_for
from tests.support.load import fetch
from tests.support.procs import Running, free_port, isolated, run
from tests.support.releases import app_files
from tests.support.switching import stop_everything

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_deploy_then_rollback_after_a_worker_restart_from_the_command_line(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    commit(repo, app_files("v1"), "First")
    port = free_port()
    caddy = {
        "ONWATCH_CADDY_HTTPS": "false",
        "ONWATCH_CADDY_HTTP_PORT": str(port),
        "ONWATCH_CADDY_HTTPS_PORT": str(free_port()),
        "ONWATCH_CADDY_HEALTH_PORT": str(free_port()),
    }
    # Short: supervisord's and Caddy's unix sockets live in the data directory.
    short = Path(tempfile.mkdtemp(prefix="ow-cli-"))
    try:
        with isolated(short, migrated=True, **caddy) as env:
            call(child_deploys.make_org, env, "Acme", migrate=True)
            run(["services", "add", "shop", str(repo)], env)
            early = run(["deploy", "shop"], env)
            bad_domain = run(["services", "domain", "shop", "not a domain"], env)
            domain = run(["services", "domain", "shop", "shop.test", "--no-auto-deploy"], env)
            bad_commit = run(["deploy", "shop", "--commit", "main;rm"], env)
            no_rollback = run(["rollback", "shop"], env)
            with Running(["worker"], env) as worker:
                worker.wait_for("ready")
                first = run(["deploy", "shop", "--wait"], env, timeout=180)
                # Here, not below: a failed deploy's fetch would hide why it failed.
                assert first.returncode == 0, first.stdout + first.stderr
                v1 = fetch(port, "shop.test")
                commit(repo, app_files("v2"), "Second")
                second = run(["deploy", "shop", "--wait"], env, timeout=180)
                assert second.returncode == 0, second.stdout + second.stderr
                v2 = fetch(port, "shop.test")
            marked = run(["releases", "no-rollback", "shop", "2", "--why", "drops a table"], env)
            listed = run(["releases", "list", "shop"], env)
            refused = run(["rollback", "shop"], env)
            run(["releases", "no-rollback", "shop", "2", "--off"], env)
            with Running(["worker"], env) as worker:
                worker.wait_for("ready")
                back = run(["rollback", "shop", "--wait"], env, timeout=180)
                assert back.returncode == 0, back.stdout + back.stderr
                after = fetch(port, "shop.test")
    finally:
        stop_everything(Machine(short / "data" / "deploys"))
        shutil.rmtree(short, ignore_errors=True)
    assert early.returncode == 2
    assert early.stderr == "onwatch: shop has no domain yet; set one before deploying\n"
    assert bad_domain.returncode == 2 and bad_domain.stderr.count("\n") == 1
    assert domain.returncode == 0, domain.stderr
    assert domain.stdout == "onwatch: shop answers at shop.test; deploy by hand\n"
    assert bad_commit.returncode == 2 and "is not a commit id" in bad_commit.stderr
    assert no_rollback.returncode == 2
    assert no_rollback.stderr == "onwatch: shop has no live release to roll back from\n"
    assert first.returncode == 0, first.stdout + first.stderr
    assert "health gate\t" in first.stdout and "\tok\t" in first.stdout
    assert first.stderr == f"onwatch: deploy #1 succeeded; release 1 ({first_sha(repo)} is live\n"
    assert v1 == (200, "v1") and v2 == (200, "v2"), (v1, v2, second.stderr)
    assert marked.returncode == 0, marked.stderr
    assert listed.stdout.splitlines()[0].endswith(
        "\tready\tlive; no rollback past this: drops a table"
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("onwatch: Cannot roll back to release 1 (")
    assert ') is marked "no rollback past this" (drops a table)' in refused.stderr
    assert back.returncode == 0, back.stdout + back.stderr
    assert "build" not in back.stdout  # nothing rebuilt
    assert after == (200, "v1")
    # Each deploy ran its release command once (in the sandbox), the rollback none.
    ran = [
        [line for line in d.stdout.splitlines() if line.startswith("release command\t")]
        for d in (first, second, back)
    ]
    assert [len(lines) for lines in ran] == [1, 1, 0], ran
    assert all("\tok\texited with 0 in " in lines[0] for lines in ran[:2]), ran


def first_sha(repo: Path) -> str:
    from tests.support.deploys import git

    return git(repo, "rev-list", "--max-parents=0", "HEAD")[:7] + ")"


@pytest.mark.django_db
def test_deploy_wait_says_the_watch_goes_on(
    org: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    """`onwatch deploy --wait` ends with the deploy; it printed the watch still going on as
    "ok" and said nothing of a rollback that might yet follow."""
    service = service_for(org, "/srv/git/shop.git")
    release = Release.objects.create(service=service, commit="a" * 40, state=ReleaseState.READY)
    deploy = Deploy.objects.create(
        service=service, release=release, trigger="cli", state=State.SUCCEEDED
    )
    until = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    watch = Watch.objects.create(deploy=deploy, until=until, upstream="127.0.0.1:9")
    services.watch_step(watch, "watching the answers of release 1 until 09:05:00 UTC")
    assert deploy_cli.follow(deploy.pk) == 0
    printed = capsys.readouterr()
    [line] = [s for s in printed.out.splitlines() if s.startswith("watch\t")]
    assert line.split("\t")[1:3] == ["—", "running"]
    assert "its watch goes on until 09:05:00 UTC; onwatch rolls the release back" in printed.err


@pytest.mark.django_db
def test_deploy_wait_says_a_step_its_failed_deploy_left_open_stopped(
    org: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    at = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    open_step = {"name": "health gate", "started": at.isoformat(), "ended": None}
    deploy = Deploy.objects.create(
        service=service,
        trigger="cli",
        state=State.FAILED,
        reason="its worker stopped",
        steps=[open_step | {"seconds": None, "ok": True, "detail": ""}],
    )
    assert deploy_cli.follow(deploy.pk) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.split("\t")[1:3] == ["—", "stopped (the deploy failed)"]


@pytest.mark.django_db
def test_releases_list_names_a_release_its_watch_rolled_back(
    org: Organization, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It listed the release the watch rolled back as plain "ready", the one a bare
    `onwatch rollback` would then have made live again."""
    monkeypatch.setattr(deploy_cli, "prepare", lambda: None)  # the test's database is ready
    service = service_for(org, "/srv/git/shop.git")
    release = Release.objects.create(service=service, commit="b" * 40, state=ReleaseState.READY)
    deploy = Deploy.objects.create(
        service=service, release=release, trigger="cli", state=State.SUCCEEDED
    )
    found = datetime(2026, 3, 2, 9, 22, 19, tzinfo=UTC)
    Watch.objects.create(
        deploy=deploy,
        until=found,
        upstream="127.0.0.1:9",
        state=WatchState.ROLLED_BACK,
        detected_at=found,
    )
    assert deploy_cli.cmd_releases_list(argparse.Namespace(org=None, service="shop")) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{release.pk}\t") and line.endswith(
        "; rolled back by its watch at 09:22 UTC"
    ), line
