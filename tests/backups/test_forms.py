"""The backups pages people use: repositories, sources and plans added, changed and
removed through their forms; backing up and drilling now; restoring from the UI with a real
restic repository; and the owner's recovery kit, whose commands are run for real."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from onwatch.backups import services
from onwatch.backups.drills import run_drill
from onwatch.backups.models import Plan, Repository, Restore, Source, SourceKind
from onwatch.backups.runs import run_backup
from onwatch.core import jobs
from onwatch.core.models import AuditEntry, Job, JobState, Organization, Schedule
from tests.support.backups import (
    PgSource,
    admin,
    directory,
    local_repo,
    pg_db,
    pg_parts,
    pg_source,
    run_kit,
    shell_blocks,
    sqlite_file,
)
from tests.support.fixtures import signed_in
from tests.support.mariadb import MariaDB, mariadb_server
from tests.support.procs import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
__all__ = ["mariadb_server", "pg_db"]

SECRET_KEY_ID = "AKIAEXAMPLEKEYID"
SECRET_ACCESS = "wJalrXUtnFEMI-very-secret-access-key"


def audit(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


def audit_text() -> str:
    return json.dumps([[e.action, e.target, e.data] for e in AuditEntry.objects.all()])


def page(client: Client, name: str, *args: Any) -> str:
    r = client.get(reverse(name, args=args))
    assert r.status_code == 200, r.status_code
    return r.content.decode()


def post(client: Client, name: str, data: dict[str, Any], *args: Any) -> Any:
    return client.post(reverse(name, args=args), data)


def errors_of(r: Any) -> str:
    assert r.status_code == 200, f"expected the form again, got {r.status_code}"
    return " ".join(
        re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', r.content.decode(), re.S)
    )


def sqlite_plan(org: Organization, tmp_path: Path, **fields: Any) -> Plan:
    source = services.add_source(
        org, "notes db", SourceKind.SQLITE, path=str(sqlite_file(tmp_path / "notes.sqlite3"))
    )
    repo = local_repo(org, tmp_path / "repo")
    return services.add_plan(source, "notes nightly", [repo], **fields)


def notes_in(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM notes").fetchone()[0])


# --- repositories --------------------------------------------------------------------------


def test_a_repository_is_added_initialised_and_its_secrets_never_shown_again(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    client = signed_in(members["admin"])
    r = post(
        client,
        "backup_repository_add",
        {
            "name": "office nas",
            "url": str(tmp_path / "nas"),
            "provider": "office",
            "location": "Prague",
            "env": f"AWS_ACCESS_KEY_ID={SECRET_KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET_ACCESS}\n",
        },
    )
    repository = Repository.objects.get(name="office nas")
    assert r.status_code == 302 and r["Location"] == reverse(
        "backup_repository", args=[repository.pk]
    )
    assert (tmp_path / "nas" / "config").is_file()  # restic initialised it
    assert len(repository.password) >= 32 and repository.ready
    assert json.loads(repository.env) == {
        "AWS_ACCESS_KEY_ID": SECRET_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS,
    }
    [entry] = audit("backup-repository-added")
    assert entry.target == "office nas" and entry.actor == members["admin"].email
    shown = page(client, "backup_repository", repository.pk)
    shown += page(client, "backup_repository_edit", repository.pk)
    for secret in (SECRET_KEY_ID, SECRET_ACCESS, repository.password):
        assert secret not in shown and secret not in audit_text()
    assert "stored (not shown)" in shown


def test_the_repository_form_explains_what_is_wrong(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    local_repo(org, tmp_path / "taken", name="taken")
    client = signed_in(members["admin"])
    base = {"name": "new", "url": str(tmp_path / "r"), "provider": "aws"}
    cases = [
        ({"url": "ftp://example.com/backups"}, "restic URL"),
        ({"url": "relative/path"}, "starting with /"),
        ({"url": "rest:http://u:pw@backup.example:8000/"}, "use rest:https://"),
        ({"url": "s3:http://10.0.0.7:9000/bucket"}, "would cross the network unencrypted"),
        ({"env": "this line has no equals sign"}, "NAME=value"),
        ({"env": "RESTIC_PASSWORD=x"}, "set by onwatch"),
        ({"env": "LD_PRELOAD=/tmp/evil.so"}, "not a storage credential"),
        ({"name": "taken"}, "Another repository is called taken"),
        ({"provider": ""}, "This field is required"),
    ]
    for change, words in cases:
        r = post(client, "backup_repository_add", {**base, **change})
        assert words in errors_of(r), (change, errors_of(r))
    # A typed secret is never echoed in the error either.
    r = post(client, "backup_repository_add", {**base, "env": f"oops {SECRET_ACCESS}"})
    assert SECRET_ACCESS not in r.content.decode()
    assert list(Repository.objects.values_list("name", flat=True)) == ["taken"]
    assert not (tmp_path / "r").exists()


def test_changing_a_repository_keeps_blank_secrets_and_checks_new_ones(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    client = signed_in(members["admin"])
    post(
        client,
        "backup_repository_add",
        {
            "name": "nas",
            "url": str(tmp_path / "nas"),
            "provider": "office",
            "env": "AWS_DEFAULT_REGION=eu-1",
        },
    )
    repository = Repository.objects.get(name="nas")
    url, password = repository.url, repository.password
    data = {"name": "big nas", "provider": "office", "location": "basement", "url": "", "env": ""}
    r = post(client, "backup_repository_edit", data, repository.pk)
    assert r.status_code == 302
    repository.refresh_from_db()
    assert (repository.name, repository.location) == ("big nas", "basement")
    assert (repository.url, repository.password, repository.env) == (
        url,
        password,
        '{"AWS_DEFAULT_REGION": "eu-1"}',
    )
    assert audit("backup-repository-changed")[-1].data["changed"] == ["name", "location"]
    # A new address must reach a repository before it is kept: a typo would stop backups.
    r = post(
        client, "backup_repository_edit", {**data, "url": str(tmp_path / "nowhere")}, repository.pk
    )
    assert "cannot be used" in errors_of(r)
    repository.refresh_from_db()
    assert repository.url == url
    # The same repository moved (a disk mounted elsewhere) is accepted.
    os.rename(tmp_path / "nas", tmp_path / "moved")
    r = post(
        client, "backup_repository_edit", {**data, "url": str(tmp_path / "moved")}, repository.pk
    )
    assert r.status_code == 302
    repository.refresh_from_db()
    assert repository.url == str(tmp_path / "moved") and repository.shown_url == repository.url
    r = post(client, "backup_repository_edit", {**data, "clear_env": "on"}, repository.pk)
    repository.refresh_from_db()
    assert repository.env == ""
    assert audit("backup-repository-changed")[-1].data["changed"] == ["env"]


def test_an_sftp_repository_shows_its_public_key_and_connect_explains_a_failure(
    org: Organization, members: dict[str, Any]
) -> None:
    client = signed_in(members["admin"])
    url = f"sftp://backup@127.0.0.1:{free_port()}//srv/backups"
    r = post(client, "backup_repository_add", {"name": "box", "url": url, "provider": "hetzner"})
    assert r.status_code == 302
    repository = Repository.objects.get(name="box")
    assert not repository.ready and repository.ssh_public_key.startswith("ssh-")
    shown = page(client, "backup_repository", repository.pk)
    assert repository.ssh_public_key in shown and "Not connected yet" in shown
    assert "-----BEGIN" not in shown  # the private half stays in its encrypted column
    assert reverse("backup_repository_connect", args=[repository.pk]) in shown
    # Nothing listens on that port: the failure is said, not raised.
    r = client.post(reverse("backup_repository_connect", args=[repository.pk]), follow=True)
    assert "Could not connect to box" in r.content.decode()
    repository.refresh_from_db()
    assert not repository.ready


def test_a_repository_in_use_is_not_removed_and_a_free_one_is(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    used = plan.copies.get()
    spare = local_repo(org, tmp_path / "spare", name="spare")
    client = signed_in(members["admin"])
    r = client.post(reverse("backup_repository_delete", args=[used.pk]), follow=True)
    assert "take it out of those plans first" in r.content.decode()
    assert Repository.objects.filter(pk=used.pk).exists()
    r = client.post(reverse("backup_repository_delete", args=[spare.pk]), follow=True)
    assert "The backups in it are not deleted" in r.content.decode()
    assert not Repository.objects.filter(pk=spare.pk).exists()
    assert (tmp_path / "spare" / "config").is_file()
    assert [e.target for e in audit("backup-repository-removed")] == ["spare"]


# --- sources -------------------------------------------------------------------------------


def test_the_source_form_asks_each_kind_for_what_it_needs(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    client = signed_in(members["admin"])
    pg = reverse("backup_source_add_kind", args=["postgresql"])
    form = client.get(pg).content.decode()
    assert 'name="host"' in form and 'name="path"' not in form and 'value="5432"' in form
    files = client.get(reverse("backup_source_add_kind", args=["directory"])).content.decode()
    assert 'name="path"' in files and 'name="host"' not in files
    assert 'name="smoke_queries"' not in files
    assert client.get(reverse("backup_source_add_kind", args=["oracle"])).status_code == 404
    base = {"name": "shop", "host": "db", "port": "5432", "database": "shop", "username": "u"}
    cases = [
        ({"host": ""}, "This field is required"),
        ({"port": "70000"}, "less than or equal to 65535"),
        ({"smoke_queries": "select 1"}, "Line 1: write each check as SQL =&gt; expected answer"),
        ({"smoke_queries": 'select 1 => {"a": 1}'}, "not an answer onwatch can compare"),
        ({"smoke_queries": '[{"sql": 1}]'}, "Write a JSON list like"),
        ({"scratch_url": "mysql://u:p@h/"}, "postgresql://user:password@host:port/"),
        ({"smoke_queries": "delete from orders => 0"}, "a smoke query is one SELECT statement"),
        ({"smoke_queries": "select 1; drop table t => 1"}, "a smoke query is one SELECT"),
        ({"smoke_queries": '[{"sql": "attach \'/x\' as y", "expect": 1}]'}, "one SELECT"),
    ]
    for change, words in cases:
        assert words in errors_of(client.post(pg, {**base, **change})), change
    relative = client.post(
        reverse("backup_source_add_kind", args=["sqlite"]), {"name": "x", "path": "db.sqlite3"}
    )
    assert "starting with /" in errors_of(relative)
    # onwatch's own database (and sessions, and keys) is no source: those who manage
    # backups would read it through smoke queries.
    own = Path(settings.DATA_DIR) / "onwatch.sqlite3"
    for path in (str(own), str(Path(settings.DATA_DIR)), "/", str(Path(settings.KEY_FILE))):
        r = client.post(
            reverse("backup_source_add_kind", args=["sqlite"]), {"name": "x", "path": path}
        )
        assert "own data folder" in errors_of(r) or "key file" in errors_of(r), path
    assert not Source.objects.exists()


def test_a_source_in_onwatchs_own_folder_made_behind_the_forms_back_fails_its_run(
    org: Organization, tmp_path: Path
) -> None:
    own = Path(settings.DATA_DIR) / "onwatch.sqlite3"
    with pytest.raises(services.Refused, match="own data folder"):
        services.add_source(org, "own", SourceKind.SQLITE, path=str(own))
    # As one saved before the rule, or written to the database by hand.
    source = Source.objects.create(org=org, name="own", kind=SourceKind.SQLITE, path=str(own))
    plan = services.add_plan(source, "own", [local_repo(org, tmp_path / "repo")])
    run = run_backup(plan, print)
    assert run.state == "failed" and "own data folder" in run.error
    assert not run.copies.filter(good=True).exists()


def test_a_moved_server_needs_the_password_typed_again(
    org: Organization, members: dict[str, Any], pg_db: PgSource
) -> None:
    host, port, user = pg_parts()
    source = services.add_source(
        org, "shop", SourceKind.POSTGRESQL, host=host, port=port, database=pg_db.name,
        username=user, password="kept-Shh-1",
    )  # fmt: skip
    client = signed_in(members["admin"])
    moved = {"name": "shop", "host": "evil.example", "port": str(port), "database": pg_db.name,
             "username": user, "password": "", "scratch_url": "", "smoke_queries": ""}  # fmt: skip
    r = client.post(reverse("backup_source_edit", args=[source.pk]), moved)
    assert "type the password again" in errors_of(r)
    source.refresh_from_db()
    assert source.host == host and source.password == "kept-Shh-1"


def test_a_postgresql_source_is_checked_saved_and_its_password_is_write_only(
    org: Organization, members: dict[str, Any], pg_db: PgSource
) -> None:
    host, port, user = pg_parts()
    client = signed_in(members["admin"])
    secret, scratch_secret = "pg-pass-Shh-123", "scratch-Shh-456"
    r = client.post(
        reverse("backup_source_add_kind", args=["postgresql"]),
        {
            "name": "shop db",
            "host": host,
            "port": str(port),
            "database": pg_db.name,
            "username": user,
            "password": secret,
            "provider": "hetzner",
            "scratch_url": f"postgresql://{user}:{scratch_secret}@{host}:{port}/postgres",
            "smoke_queries": "select count(*) from customers => 3\n"
            "select name from customers where id = 1 => ada\n"
            'select id, name from customers where id < 3 order by id => [[1, "ada"], [2, "bob"]]',
        },
    )
    assert r.status_code == 302, errors_of(r)
    source = Source.objects.get(name="shop db")
    assert source.password == secret and scratch_secret in source.scratch_url
    assert source.smoke_queries == [
        {"sql": "select count(*) from customers", "expect": [[3]]},
        {"sql": "select name from customers where id = 1", "expect": [["ada"]]},
        {"sql": "select id, name from customers where id < 3 order by id",
         "expect": [[1, "ada"], [2, "bob"]]},
    ]  # fmt: skip
    edit = page(client, "backup_source_edit", source.pk)
    assert secret not in edit and scratch_secret not in edit
    assert "select count(*) from customers =&gt; 3" in edit and "A password is stored" in edit
    # Left blank on change: kept.
    r = client.post(
        reverse("backup_source_edit", args=[source.pk]),
        {"name": "shop", "host": host, "port": str(port), "database": pg_db.name,
         "username": user, "password": "", "scratch_url": "", "provider": "hetzner",
         "smoke_queries": "select count(*) from customers => 3"},
    )  # fmt: skip
    assert r.status_code == 302, errors_of(r)
    source.refresh_from_db()
    assert (source.name, source.password) == ("shop", secret)
    assert scratch_secret in source.scratch_url and len(source.smoke_queries) == 1
    assert audit("backup-source-changed")[-1].data["changed"] == ["name", "smoke_queries"]
    assert secret not in audit_text() and scratch_secret not in audit_text()


def test_a_source_with_problems_is_not_saved_unless_asked(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    client = signed_in(members["admin"])
    url = reverse("backup_source_add_kind", args=["sqlite"])
    missing = {"name": "app db", "path": str(tmp_path / "missing.sqlite3")}
    r = client.post(url, missing)
    body = r.content.decode()
    assert r.status_code == 200 and "does not exist; check the path" in body
    assert 'name="save_anyway"' in body and not Source.objects.exists()
    r = client.post(url, {**missing, "save_anyway": "1"}, follow=True)
    assert "does not exist; check the path" in r.content.decode()  # still said, once saved
    assert Source.objects.get().path == missing["path"]
    assert audit("backup-source-added")[-1].data["problems"] == 1
    fine = client.post(
        reverse("backup_source_add_kind", args=["directory"]),
        {"name": "uploads", "path": str(directory(tmp_path / "up"))},
    )
    assert fine.status_code == 302


def test_a_source_with_a_plan_is_not_removed_and_a_free_one_is(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    free = services.add_source(org, "spare", SourceKind.DIRECTORY, path=str(tmp_path))
    client = signed_in(members["admin"])
    r = client.post(reverse("backup_source_delete", args=[plan.source_id]), follow=True)
    assert "remove those plans first" in r.content.decode()
    client.post(reverse("backup_source_delete", args=[free.pk]))
    assert list(Source.objects.values_list("name", flat=True)) == ["notes db"]
    assert [e.target for e in audit("backup-source-removed")] == ["spare"]


# --- plans ---------------------------------------------------------------------------------


def plan_data(source: Source, repositories: list[Repository], **change: Any) -> dict[str, Any]:
    return {
        "name": "shop nightly",
        "source": source.pk,
        "copies": [c.pk for c in repositories],
        "cron": "30 2 * * *",
        "tz": "Europe/Prague",
        "drill_cron": "0 5 * * 6",
        "drill_from": "",
        "keep_daily": 7,
        "keep_weekly": 4,
        "keep_monthly": 6,
        "rpo_minutes": 1560,
        "rto_minutes": 30,
        **change,
    }


def test_the_plan_form_checks_schedules_zones_and_copies(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    source = services.add_source(org, "up", SourceKind.DIRECTORY, path=str(tmp_path))
    here = local_repo(org, tmp_path / "a", name="here")
    there = local_repo(org, tmp_path / "b", name="there")
    client = signed_in(members["admin"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "every night"}, "is not a cron expression"),
        ({"cron": "61 3 * * *"}, "is not a valid cron expression"),
        ({"drill_cron": "0 4 * *"}, "is not a cron expression"),
        ({"tz": "Mars/Olympus"}, "is not a time zone"),
        ({"copies": []}, "This field is required"),
        ({"drill_from": there.pk, "copies": [here.pk]}, "there is not one of the copies"),
        ({"rpo_minutes": 0}, "greater than or equal to 1"),
    ]
    for change, words in cases:
        r = post(client, "backup_plan_add", plan_data(source, [here], **change))
        assert words in errors_of(r), (change, errors_of(r))
    assert not Plan.objects.exists() and not Schedule.objects.exists()


def test_a_plan_is_added_changed_with_its_schedules_and_removed(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    source = services.add_source(
        org, "up", SourceKind.DIRECTORY, path=str(tmp_path), provider="hetzner"
    )
    here = local_repo(org, tmp_path / "a", name="here", provider="hetzner")
    there = local_repo(org, tmp_path / "b", name="there", provider="backblaze")
    client = signed_in(members["admin"])
    r = post(client, "backup_plan_add", plan_data(source, [here]))
    plan = Plan.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("backup_plan", args=[plan.pk])
    assert plan.schedule and plan.drill_schedule
    assert (plan.schedule.cron, plan.schedule.tz, plan.schedule.payload) == (
        "30 2 * * *", "Europe/Prague", {"plan": plan.pk}
    )  # fmt: skip
    assert (plan.drill_schedule.cron, plan.drill_schedule.kind) == ("0 5 * * 6", "backups.drill")
    assert plan.rto_minutes == 30
    shown = client.get(r["Location"]).content.decode()
    assert "has no offsite copy" in shown and "Not offsite" in shown  # same provider
    assert audit("backup-plan-added")[0].target == "shop nightly"

    Schedule.objects.filter(pk=plan.schedule.pk).update(next_run_at="2030-01-01T00:00Z")
    form = page(client, "backup_plan_edit", plan.pk)
    assert 'value="30 2 * * *"' in form and 'value="Europe/Prague"' in form
    data = plan_data(source, [here, there], cron="0 1 * * *", drill_from=there.pk, keep_daily=14)
    r = post(client, "backup_plan_edit", data, plan.pk)
    assert r.status_code == 302, errors_of(r)
    plan.refresh_from_db()
    assert plan.schedule_id is not None
    schedule = Schedule.objects.get(pk=plan.schedule_id)
    assert (schedule.cron, schedule.next_run_at) == ("0 1 * * *", None)  # placed afresh
    assert set(plan.copies.all()) == {here, there} and plan.drill_from == there
    assert plan.keep_daily == 14
    assert audit("backup-plan-changed")[-1].data["changed"] == [
        "copies", "drill_from", "cron", "keep_daily"
    ]  # fmt: skip
    shown = client.get(r["Location"]).content.decode()
    # Both sit on this test machine: not offsite, whatever their providers say.
    assert shown.count('<span class="state-failed">no</span>') == 2 and "backblaze" in shown

    assert plan.schedule_id is not None and plan.drill_schedule_id is not None
    ids = [plan.schedule_id, plan.drill_schedule_id]
    r = client.post(reverse("backup_plan_delete", args=[plan.pk]), follow=True)
    assert "stay in the repositories" in r.content.decode()
    assert not Plan.objects.exists() and not Schedule.objects.filter(pk__in=ids).exists()
    assert audit("backup-plan-removed")[0].target == "shop nightly"


# --- who may do what -----------------------------------------------------------------------


def test_lower_roles_are_refused_and_do_not_see_the_buttons(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    repository = plan.copies.get()
    viewer, deployer, admin_ = (signed_in(members[r]) for r in ("viewer", "deployer", "admin"))
    seen = page(viewer, "backup_plan", plan.pk)
    assert "Back up now" not in seen and "Restore…" not in seen and "Change" not in seen
    seen = page(deployer, "backup_plan", plan.pk)
    assert "Back up now" in seen and "Test a restore now" in seen
    assert "Restore…" not in seen and reverse("backup_plan_edit", args=[plan.pk]) not in seen
    seen = page(admin_, "backup_plan", plan.pk)
    assert "Restore…" in seen and reverse("backup_plan_edit", args=[plan.pk]) in seen
    assert "recovery kit" not in page(admin_, "backup_repository", repository.pk).lower()

    refused = [
        (viewer, "backup_plan_run", [plan.pk], {}),
        (viewer, "backup_plan_drill", [plan.pk], {}),
        (deployer, "backup_repository_add", [], {"name": "x", "url": "/x", "provider": "p"}),
        (deployer, "backup_plan_delete", [plan.pk], {}),
        (deployer, "backup_source_delete", [plan.source_id], {}),
        (deployer, "backup_restore_start", [plan.pk], {"step": "check"}),
    ]
    for client, name, args, data in refused:
        assert client.post(reverse(name, args=args), data).status_code == 403, name
    assert admin_.get(reverse("backup_repository_kit", args=[repository.pk])).status_code == 403
    assert Plan.objects.filter(pk=plan.pk).exists() and Repository.objects.count() == 1
    assert not Job.objects.exists() and not audit("recovery-kit-downloaded")


def test_back_up_now_and_drill_now_queue_durable_jobs(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    client = signed_in(members["deployer"])
    r = client.post(reverse("backup_plan_run", args=[plan.pk]))
    job = Job.objects.get(kind="backups.run")
    assert r["Location"] == reverse("job_detail", args=[job.pk])
    assert (job.payload, job.org, job.state) == ({"plan": plan.pk}, org, JobState.QUEUED)
    [done] = jobs.run_pending(kinds=["backups.run"])
    assert done.state == JobState.SUCCEEDED
    r = client.post(reverse("backup_plan_drill", args=[plan.pk]))
    drill = Job.objects.get(kind="backups.drill")
    assert r["Location"] == reverse("job_detail", args=[drill.pk]) and drill.payload == {
        "plan": plan.pk
    }
    [done] = jobs.run_pending(kinds=["backups.drill"])
    assert done.state == JobState.SUCCEEDED
    started = AuditEntry.objects.filter(action__startswith="backups").order_by("seq")
    assert [e.action for e in started] == ["backups-run-started", "backups-drill-started"]
    shown = page(client, "backup_plan", plan.pk)
    assert shown.count('class="drill ok"') == 1  # the drill is a dot on the RTO chart
    assert f"job #{job.pk}" in shown and f"job #{drill.pk}" in shown


# --- restoring -----------------------------------------------------------------------------


def restore_steps(client: Client, plan: Plan, **target: str) -> tuple[str, Any]:
    """Pick the newest backup and a target, then confirm with the plan's name."""
    url = reverse("backup_restore_start", args=[plan.pk])
    start = client.get(url).content.decode()
    snapshot = re.search(r'name="snapshot" value="([0-9a-f]{64})"', start)
    assert snapshot, start
    repository = plan.copies.get().pk
    chosen = {"repository": repository, "snapshot": snapshot.group(1), **target}
    confirm = client.post(url, {"step": "check", **chosen})
    assert "Confirm the restore" in confirm.content.decode(), errors_of(confirm)
    return snapshot.group(1), client.post(
        url, {"step": "confirm", **chosen, "confirm_name": plan.name}
    )


def test_a_sqlite_restore_from_the_ui_runs_as_a_job_into_a_new_file(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    run = run_backup(plan, print)
    client = signed_in(members["admin"])
    url = reverse("backup_restore_start", args=[plan.pk])
    start = client.get(url).content.decode()
    [copy] = run.copies.all()
    assert copy.snapshot_id[:8] in start and f"backup #{run.pk}" in start
    snapshot = re.search(r'name="snapshot" value="([0-9a-f]{64})"', start)
    assert snapshot
    chosen = {"repository": copy.repository_id, "snapshot": snapshot.group(1)}

    taken = tmp_path / "notes.sqlite3"  # the live database itself
    r = client.post(url, {"step": "check", **chosen, "path": str(taken)})
    assert "exists already; onwatch never restores over existing files" in errors_of(r)
    target = tmp_path / "restored" / "notes.sqlite3"
    r = client.post(url, {"step": "check", **chosen, "path": str(target)})
    body = r.content.decode()
    assert "Confirm the restore" in body and str(target) in body and "Type notes nightly" in body
    r = client.post(
        url, {"step": "confirm", **chosen, "path": str(target), "confirm_name": "notes"}
    )
    assert "Type notes nightly exactly" in errors_of(r)
    assert not Restore.objects.exists()

    r = client.post(
        url, {"step": "confirm", **chosen, "path": str(target), "confirm_name": "notes nightly"}
    )
    restore = Restore.objects.get()
    assert r["Location"] == reverse("backup_restore", args=[restore.pk])
    assert restore.job is not None and restore.job.kind == "backups.restore"
    assert restore.job.payload == {"plan": plan.pk, "restore": restore.pk, "path": str(target)}
    assert (restore.target, restore.requested_by) == (str(target), members["admin"].email)
    waiting = page(client, "backup_restore", restore.pk)
    assert '<meta http-equiv="refresh"' in waiting and "Waiting for a worker" in waiting
    assert audit("backup-restore-requested")[0].data["to"] == str(target)

    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.SUCCEEDED, job.error
    assert "restoring into" in job.log and "restored into" in job.log
    restore.refresh_from_db()
    assert restore.state == "succeeded" and restore.seconds is not None and restore.finished_at
    assert notes_in(target) == 40
    done = page(client, "backup_restore", restore.pk)
    assert "Restored." in done and "http-equiv" not in done and "restored into" in done
    assert audit("backup-restored")[0].data["snapshot"] == snapshot.group(1)
    assert str(target) in page(client, "backup_plan", plan.pk)  # in the plan's restores


def test_a_running_restore_shows_the_lines_its_job_wrote_so_far(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    job = jobs.enqueue("backups.restore", {"plan": plan.pk}, org=org)
    claimed = jobs.claim("test-worker", ["backups.restore"])
    assert claimed is not None and claimed.pk == job.pk
    restore = Restore.objects.create(plan=plan, target=str(tmp_path / "new.sqlite3"), job=job)
    jobs.JobContext(claimed).log("restoring into the new file; this can take a while")
    shown = page(signed_in(members["viewer"]), "backup_restore", restore.pk)
    assert "Restoring…" in shown and "restoring into the new file" in shown
    assert "Nothing yet." not in shown


def test_a_restore_whose_target_appeared_meanwhile_fails_and_says_why(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    run_backup(plan, print)
    target = tmp_path / "later.sqlite3"
    restore_steps(signed_in(members["owner"]), plan, path=str(target))
    restore = Restore.objects.get()
    target.write_text("someone's new file")
    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.FAILED and "exists and is not empty" in job.error
    restore.refresh_from_db()
    assert restore.state == "failed" and "choose a new place" in restore.error
    assert target.read_text() == "someone's new file"
    shown = page(signed_in(members["viewer"]), "backup_restore", restore.pk)
    assert "The restore failed" in shown and "http-equiv" not in shown


def test_a_postgresql_restore_goes_into_a_new_database_never_an_existing_one(
    org: Organization, members: dict[str, Any], tmp_path: Path, pg_db: PgSource
) -> None:
    source = pg_source(org, pg_db)
    plan = services.add_plan(source, "shop nightly", [local_repo(org, tmp_path / "repo")])
    run_backup(plan, print)
    client = signed_in(members["admin"])
    url = reverse("backup_restore_start", args=[plan.pk])
    start = client.get(url).content.decode()
    snapshot = re.search(r'name="snapshot" value="([0-9a-f]{64})"', start)
    assert snapshot and f"{pg_db.name}_restored_" in start  # a new name is suggested
    chosen = {"repository": plan.copies.get().pk, "snapshot": snapshot.group(1), "server": "source"}
    r = client.post(url, {"step": "check", **chosen, "database": pg_db.name})
    assert "That is the source database itself" in errors_of(r)
    r = client.post(url, {"step": "check", **chosen, "database": "postgres"})
    assert "A database called postgres exists there already" in errors_of(r)
    r = client.post(url, {"step": "check", **chosen, "database": "drop table; --"})
    assert "letters, digits and _ only" in errors_of(r)
    new = f"{pg_db.name}_copy"
    try:
        restore_steps(client, plan, server="source", database=new)
        restore = Restore.objects.get()
        host, port, _ = pg_parts()
        assert restore.target == f"database {new} on {host}:{port}"
        [job] = jobs.run_pending(kinds=["backups.restore"])
        assert job.state == JobState.SUCCEEDED, job.error
        with PgSource(new).connect() as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone() == (250,)
        # The same name again is refused up front.
        r = client.post(url, {"step": "check", **chosen, "database": new})
        assert f"A database called {new} exists there already" in errors_of(r)
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{new}" WITH (FORCE)')


def test_a_mariadb_restore_signs_in_with_the_stored_password_into_a_new_database(
    org: Organization, members: dict[str, Any], tmp_path: Path, mariadb_server: MariaDB
) -> None:
    name = f"shop_{os.urandom(4).hex()}"
    with closing(mariadb_server.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"USE {name}")
        cur.execute("CREATE TABLE orders (id int primary key, total int)")
        cur.execute("INSERT INTO orders VALUES (1, 10), (2, 20), (3, 30)")
    source = services.add_source(
        org, "shop", SourceKind.MARIADB, host=mariadb_server.host, port=mariadb_server.port,
        database=name, username=mariadb_server.user, password=mariadb_server.password,
    )  # fmt: skip
    plan = services.add_plan(source, "shop nightly", [local_repo(org, tmp_path / "repo")])
    assert run_backup(plan, print).state == "succeeded"
    client = signed_in(members["admin"])
    url = reverse("backup_restore_start", args=[plan.pk])
    snapshot = re.search(
        r'name="snapshot" value="([0-9a-f]{64})"', client.get(url).content.decode()
    )
    assert snapshot
    chosen = {"repository": plan.copies.get().pk, "snapshot": snapshot.group(1), "server": "source"}
    r = client.post(url, {"step": "check", **chosen, "database": "mysql"})
    assert "A database called mysql exists there already" in errors_of(r)
    restore_steps(client, plan, server="source", database=f"{name}_copy")
    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.SUCCEEDED, job.error
    assert mariadb_server.password not in job.log + json.dumps(job.payload) + audit_text()
    with closing(mariadb_server.connect(f"{name}_copy")) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(total) FROM orders")
        assert cur.fetchone() == (60,)
    assert Restore.objects.get().target == (
        f"database {name}_copy on {mariadb_server.host}:{mariadb_server.port}"
    )


# --- the recovery kit ----------------------------------------------------------------------


def test_the_recovery_kit_restores_every_kind_with_restic_alone(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path)
    repository = plan.copies.get()
    Repository.objects.filter(pk=repository.pk).update(env=json.dumps({"AWS_REGION": "eu-1"}))
    files = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "uploads"))
    )
    dir_plan = services.add_plan(files, "uploads nightly", [repository])
    run = run_backup(plan, print)
    run_backup(dir_plan, print)
    r = signed_in(members["owner"]).get(reverse("backup_repository_kit", args=[repository.pk]))
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    assert r["Content-Type"].startswith("text/markdown")
    assert r["Content-Disposition"] == 'attachment; filename="recovery-kit-local.md"'
    kit = r.content.decode()
    assert repository.password in kit and "export AWS_REGION=eu-1" in kit
    [entry] = audit("recovery-kit-downloaded")
    assert entry.target == "local" and entry.actor == members["owner"].email
    assert repository.password not in audit_text()

    work = tmp_path / "fresh-machine"
    work.mkdir()
    [setup] = shell_blocks(kit, "## Before you start")
    [listing] = shell_blocks(kit, "## List the backups")
    assert listing.strip() == f"restic -r {repository.url} snapshots"
    listed = run_kit(setup + listing, work)
    assert run.copies.get().snapshot_id[:8] in listed and f"plan:{plan.pk}" in listed
    [sqlite_restore] = shell_blocks(kit, "### Plan notes nightly: notes db (SQLite file)")
    run_kit(setup + sqlite_restore, work)
    assert notes_in(work / "restored.sqlite3") == 40
    [dir_restore] = shell_blocks(kit, "### Plan uploads nightly: uploads (Directory)")
    run_kit(setup + dir_restore, work)
    restored = work / "restored" / str(tmp_path / "uploads").lstrip("/")
    assert (restored / "sub" / "deeper" / "blob.bin").read_bytes() == (
        tmp_path / "uploads" / "sub" / "deeper" / "blob.bin"
    ).read_bytes()


def test_the_plan_page_draws_one_dot_per_drill_against_the_target(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    plan = sqlite_plan(org, tmp_path, rto_minutes=1)
    run_backup(plan, print)
    drills = [run_drill(plan, print) for _ in range(3)]
    assert all(d.verified for d in drills)
    shown = page(signed_in(members["viewer"]), "backup_plan", plan.pk)
    chart = re.search(r'<svg[^>]*class="rto-chart".*?</svg>', shown, re.S)
    assert chart
    assert chart.group(0).count("<circle") == 3 and 'class="target"' in chart.group(0)
    assert "RTO target: 60 s" in chart.group(0)
    # Copies and where they are.
    assert "fsn1" in shown and "hetzner" in shown and "Last proven restorable" in shown
