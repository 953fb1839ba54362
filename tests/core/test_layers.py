"""The layers of DESIGN.md, checked the way CI checks them: `lint-imports` with the
contracts in pyproject.toml."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from onwatch.core import hooks

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
OTHER_APPS = ("accounts", "alerts", "uptime", "backups", "deploys", "web")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_core_imports_no_other_app_not_even_inside_a_function() -> None:
    graph = grimp.build_graph("onwatch", cache_dir=None)
    wrong = [
        (importer, imported)
        for importer in graph.find_descendants("onwatch.core")
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.split(".")[1:2] and imported.split(".")[1] in OTHER_APPS
    ]
    assert wrong == []


def test_web_imports_no_app_it_shows_their_dashboard_cards_through_core() -> None:
    graph = grimp.build_graph("onwatch", cache_dir=None)
    wrong = [
        (importer, imported)
        for importer in graph.find_descendants("onwatch.web")
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.split(".")[1:2] and imported.split(".")[1] in OTHER_APPS[:-1]
    ]
    assert wrong == []


def test_a_wrong_import_fails_the_check(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "onwatch", tmp_path / "onwatch", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    crons = tmp_path / "onwatch" / "core" / "crons.py"
    crons.write_text(crons.read_text() + "\nfrom onwatch.backups import restic\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "core imports no other app" in run.stdout
    assert "onwatch.core.crons -> onwatch.backups.restic" in run.stdout


def test_the_alerts_app_carries_cores_alerts() -> None:
    from onwatch.alerts.services import raise_alert

    assert list(hooks._alerters.values()) == [raise_alert]


def test_an_alert_nobody_carries_is_logged_as_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hooks, "_alerters", {})
    with caplog.at_level(logging.ERROR, logger="onwatch.core.hooks"):
        hooks.alert(None, "Backup of shop failed", "disk full")
    assert "no app carries alerts" in caplog.text
    assert "Backup of shop failed" in caplog.text


def test_each_app_exports_its_router_and_the_api_mounts_it() -> None:
    from django.urls import resolve

    mounted = {prefix: mount.router for prefix, mount in hooks.ROUTERS.items()}
    assert mounted == {
        "/monitors/": "onwatch.uptime.api:monitors",
        "/policies/": "onwatch.alerts.api:policies",
        "/incidents/": "onwatch.alerts.api:incidents",
        "/maintenance/": "onwatch.alerts.api:maintenance",
        "/services/": "onwatch.deploys.api:services",
        "/hosts/": "onwatch.deploys.hostapi:hosts",
        "/errors/projects/": "onwatch.errors.api:projects",
        "/errors/issues/": "onwatch.errors.api:issues",
    }
    for prefix in mounted:
        assert resolve(f"/api/v1{prefix}").url_name


@pytest.mark.parametrize(
    ("argv", "app"),
    [
        (["monitors", "export"], "uptime"),
        (["notify", "test"], "alerts"),
        (["restore", "shop", "--to", "/tmp/x"], "backups"),
        (["pipelines", "run", "shop"], "deploys"),
        (["errors", "add-project", "shop"], "errors"),
    ],
)
def test_apps_contribute_their_own_commands(argv: list[str], app: str) -> None:
    from onwatch.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.func.__module__ == f"onwatch.{app}.cli"


def test_a_process_that_serves_no_api_never_loads_django_ninja(tmp_path: Path) -> None:
    # Every worker, scheduler, prober and command sets Django up; the apps' services (loaded
    # by their ready()) share validators with the API, and loading django-ninja with them
    # was some 0.1-0.2 s of CPU of each such start.
    code = (
        "import json, sys, django; django.setup(); "
        "print(json.dumps([m for m in ('ninja', 'onwatch.core.rest') if m in sys.modules]))"
    )
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "onwatch.settings",
        "ONWATCH_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "imports-check",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
