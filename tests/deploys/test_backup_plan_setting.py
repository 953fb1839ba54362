"""A service names the backup plan a deploy backs up before a release's migrations: from
its form (shown on its page), the API and the CLI, each through services.py; and a deploy
goes without that backup only when asked to, on purpose, audited. The backup itself runs
with real components in test_backup_before_migrations.py."""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from onwatch.backups import services as backup_services
from onwatch.backups.models import Plan, SourceKind
from onwatch.core.models import AuditEntry, Organization
from onwatch.deploys.models import Deploy, Service
from onwatch.deploys.switch import Machine
from tests.support.backups import directory, local_repo, plan_for
from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.deploys import service_for
from tests.support.fixtures import TokenApi, make_org, signed_in
from tests.support.procs import free_port, isolated, run
from tests.support.switching import stop_everything


def nightly(org: Organization, folder: Path) -> Plan:
    source = backup_services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(folder / "uploads"))
    )
    return plan_for(source, [local_repo(org, folder / "restic")])


@pytest.fixture
def shop(org: Organization) -> Service:
    return service_for(org, "/srv/git/shop.git")


def test_the_service_form_names_a_plan_and_the_page_shows_it_with_a_way_to_skip_it(
    org: Organization, shop: Service, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = nightly(org, tmp_path)
    admin = signed_in(members["admin"])
    page = f"/services/{shop.pk}/"
    assert "none: releases migrate without a backup first" in admin.get(page).content.decode()
    form = admin.get(f"{page}edit/").content.decode()
    assert f'<option value="{plan.pk}">nightly</option>' in form
    fields = {"name": "shop", "git_url": shop.git_url, "branch": "main", "supersede": "on"}
    saved = admin.post(f"{page}edit/", {**fields, "backup_plan_id": str(plan.pk)})
    assert saved.status_code == 302, saved.content.decode()
    shop.refresh_from_db()
    assert shop.backup_plan == plan
    entry = AuditEntry.objects.filter(action="service-changed").first()
    assert entry is not None and entry.data["changed"] == ["backup_plan_id"]
    admin.post(f"{page}domain/", {"domain": "shop.example.com"})
    shown = html.unescape(admin.get(page).content.decode())
    link = f'<a href="/backups/plans/{plan.pk}/">nightly</a>'
    assert f"a backup of plan {link} runs before each release command (migrations)" in shown
    assert "Without the backup before migrations (on purpose)" in shown
    asked = admin.post(f"{page}deploy/", {"skip_backup": "on"})
    deploy = Deploy.objects.get()
    assert asked.status_code == 302 and deploy.skip_backup
    queued = AuditEntry.objects.get(action="deploy-queued")
    assert queued.data["skip_backup"] is True
    detail = admin.get(f"/deploys/{deploy.pk}/").content.decode()
    assert "deployed without the backup before migrations, on purpose" in detail


def test_the_api_names_a_plan_of_its_own_organization_only_and_deploys_without_it_on_purpose(
    org: Organization, shop: Service, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = nightly(org, tmp_path / "ours")
    theirs = nightly(make_org("Other"), tmp_path / "theirs")
    api = TokenApi(members["admin"], org, ["services:read", "services:write", "deploys:run"])
    base = f"/api/v1/services/{shop.pk}"
    refused = api.call("PUT", f"{base}/backup-plan/", {"plan_id": theirs.pk})
    assert refused.status_code == 422
    assert f"There is no backup plan {theirs.pk} in this organization" in refused.content.decode()
    put = api.call("PUT", f"{base}/backup-plan/", {"plan_id": plan.pk})
    assert put.status_code == 200, put.content
    assert api.call("GET", f"{base}/").json()["backup_plan_id"] == plan.pk
    made = api.call(
        "POST", "/api/v1/services/", {"name": "blog", "git_url": "/x", "backup_plan_id": theirs.pk}
    )
    assert made.status_code == 422 and not Service.objects.filter(name="blog").exists()
    api.call("PUT", f"{base}/domain/", {"domain": "shop.example.com"})
    queued = api.call("POST", f"{base}/deploy/", {"skip_backup": True})
    assert queued.status_code == 202, queued.content
    assert queued.json()["skip_backup"] is True
    entry = AuditEntry.objects.get(action="deploy-queued")
    assert entry.data["skip_backup"] is True
    cleared = api.call("PUT", f"{base}/backup-plan/", {"plan_id": None})
    assert cleared.status_code == 200 and cleared.json()["backup_plan_id"] is None


@pytest.mark.once
def test_the_command_line_names_a_plan_or_says_in_one_line_why_not(tmp_path: Path) -> None:
    caddy = {
        "ONWATCH_CADDY_HTTPS": "false",
        "ONWATCH_CADDY_HTTP_PORT": str(free_port()),
        "ONWATCH_CADDY_HTTPS_PORT": str(free_port()),
        "ONWATCH_CADDY_HEALTH_PORT": str(free_port()),
    }
    # Short: supervisord's and Caddy's unix sockets live in the data directory.
    short = Path(tempfile.mkdtemp(prefix="ow-cli-"))
    try:
        with isolated(short, migrated=True, **caddy) as env:
            call(child_deploys.make_org, env, "Acme", migrate=True)
            call(child_deploys.add_backup_plan, env, "Acme", str(tmp_path))
            run(["services", "add", "shop", str(tmp_path / "repo")], env)
            unknown = run(["services", "backup-plan", "shop", "weekly"], env)
            named = run(["services", "backup-plan", "shop", "nightly"], env)
            run(["services", "domain", "shop", "shop.test", "--no-auto-deploy"], env)
            skipped = run(["deploy", "shop", "--skip-backup"], env)
            plain = run(["deploy", "shop"], env)
            settings = call(child_deploys.print_backup_settings, env, "shop")
            cleared = run(["services", "backup-plan", "shop", ""], env)
            after = call(child_deploys.print_backup_settings, env, "shop")
    finally:
        stop_everything(Machine(short / "data" / "deploys"))
        shutil.rmtree(short, ignore_errors=True)
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "onwatch: There is no backup plan called 'weekly'; the Backups page lists the plans\n"
    )
    assert named.returncode == 0, named.stderr
    assert named.stdout == "onwatch: a deploy of shop backs up plan nightly before its migrations\n"
    assert skipped.returncode == 0 and plain.returncode == 0, skipped.stderr + plain.stderr
    assert settings.splitlines() == ["nightly", "cli True", "cli False"]
    assert cleared.stdout == "onwatch: shop deploys without a backup before migrations\n"
    assert after.splitlines()[0] == "-"
