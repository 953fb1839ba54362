"""One write path: a repository, source, plan or restore request made or changed through
its form (the Django test client posting the real form), through `onwatch restore`'s own
code, or by calling services directly ends as the same rows and the same audit entry, and
a change made in the UI is audited exactly once, by the person who made it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from onwatch.backups import services
from onwatch.backups.cli import restore_in_foreground
from onwatch.backups.models import Plan, Repository, Restore, Source, SourceKind
from onwatch.backups.restore_requests import Target
from onwatch.backups.restores import choose
from onwatch.backups.runs import run_backup
from onwatch.backups.services import Actor, PlanFields, RepositoryChange
from onwatch.core import jobs
from onwatch.core.models import AuditEntry, JobState, Organization, Schedule
from tests.support.backups import directory, local_repo, sqlite_file
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

# What differs between two equal objects in two organizations.
NOT_COMPARED = {"id", "org", "created_at", "url", "shown_url", "password", "schedule",
                "drill_schedule", "source", "drill_from", "plan", "job", "repository",
                "started_at", "finished_at", "seconds"}  # fmt: skip


def fields_of(obj: Model) -> dict[str, Any]:
    return {
        f.name: getattr(obj, f.attname)
        for f in obj._meta.concrete_fields
        if f.name not in NOT_COMPARED
    }


def last_seq() -> int:
    last = AuditEntry.objects.order_by("-seq").first()
    return last.seq if last else 0


def entries(org: Organization, after: int) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """The audit entries of `org` since `after`: action, actor, address, target and data
    (ids left out: they differ between organizations)."""
    found = AuditEntry.objects.filter(org=org, seq__gt=after).order_by("seq")
    return [
        (e.action, e.actor, e.ip, e.target, {k: v for k, v in e.data.items() if k != "id"})
        for e in found
    ]


def post(client: Client, name: str, data: dict[str, Any], *args: Any) -> None:
    r = client.post(reverse(name, args=args), data)
    errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', r.content.decode(), re.S)
    assert r.status_code == 302, errors


def person(members: dict[str, Any]) -> tuple[Client, Actor]:
    """The admin signed in, and the actor the audit log should name for them: the test
    client comes from 127.0.0.1."""
    admin = members["admin"]
    return signed_in(admin), Actor(admin.email, "127.0.0.1")


def test_a_repository_is_added_changed_connected_and_removed_alike_from_its_form_and_services(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    other = Organization.objects.create(name="Direct")
    client, actor = person(members)
    mark = last_seq()

    post(client, "backup_repository_add", {
        "name": "nas", "url": str(tmp_path / "ui"), "provider": "office", "location": "Prague",
        "env": "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\n", "append_only": "on", "pruned_by": "Sam",
    })  # fmt: skip
    services.add_repository(
        other, "nas", str(tmp_path / "direct"), "office", "Prague",
        env={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, append_only=True, pruned_by="Sam", actor=actor,
    )  # fmt: skip
    ui, direct = Repository.objects.get(org=org), Repository.objects.get(org=other)
    assert fields_of(ui) == fields_of(direct)

    post(client, "backup_repository_edit", {
        "name": "nas 2", "url": "", "provider": "office", "location": "Brno", "env": "",
        "clear_env": "on", "pruned_by": "",
    }, ui.pk)  # fmt: skip
    change = RepositoryChange(name="nas 2", provider="office", location="Brno", clear_env=True)
    services.change_repository(direct, change, actor)
    ui.refresh_from_db()
    direct.refresh_from_db()
    assert fields_of(ui) == fields_of(direct)
    assert (ui.env, ui.append_only, ui.location) == ("", False, "Brno")

    post(client, "backup_repository_forget_host_key", {}, ui.pk)
    services.forget_host_key(direct, actor)
    post(client, "backup_repository_connect", {}, ui.pk)
    services.connect_repository(direct, actor)
    ui.refresh_from_db()
    direct.refresh_from_db()
    assert fields_of(ui) == fields_of(direct) and ui.ready

    post(client, "backup_repository_delete", {}, ui.pk)
    services.remove_repository(direct, actor)
    assert not Repository.objects.exists()

    done = entries(org, mark)
    assert done == entries(other, mark)
    assert [(action, who, ip) for action, who, ip, _, _ in done] == [
        (f"backup-repository-{what}", actor.name, "127.0.0.1")
        for what in ("added", "changed", "host-key-forgotten", "connected", "removed")
    ]
    assert done[1][4] == {
        "provider": "office", "changed": ["name", "location", "append_only", "pruned_by", "env"]
    }  # fmt: skip


def test_a_source_is_added_changed_and_removed_alike_from_its_form_and_services(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    other = Organization.objects.create(name="Direct")
    client, actor = person(members)
    path = str(directory(tmp_path / "uploads"))
    mark = last_seq()

    add = {"name": "uploads", "path": path, "provider": "hetzner"}
    post(client, "backup_source_add_kind", add, "directory")
    services.add_source(other, "uploads", SourceKind.DIRECTORY, actor=actor, path=path,
                        provider="hetzner")  # fmt: skip
    ui, direct = Source.objects.get(org=org), Source.objects.get(org=other)
    assert fields_of(ui) == fields_of(direct)

    post(client, "backup_source_edit", {**add, "name": "files", "provider": ""}, ui.pk)
    services.change_source(direct, {"name": "files", "path": path, "provider": ""}, actor)
    ui.refresh_from_db()
    direct.refresh_from_db()
    assert fields_of(ui) == fields_of(direct) and ui.name == "files"

    post(client, "backup_source_delete", {}, ui.pk)
    services.remove_source(direct, actor)
    assert not Source.objects.exists()

    done = entries(org, mark)
    assert done == entries(other, mark)
    assert [(action, who, ip, data.get("changed")) for action, who, ip, _, data in done] == [
        ("backup-source-added", actor.name, "127.0.0.1", ["name", "path", "provider"]),
        ("backup-source-changed", actor.name, "127.0.0.1", ["name", "provider"]),
        ("backup-source-removed", actor.name, "127.0.0.1", None),
    ]


def plan_parts(org: Organization, tmp_path: Path) -> tuple[Source, Repository, Repository]:
    where = tmp_path / str(org.pk)
    source = services.add_source(org, "up", SourceKind.DIRECTORY, path=str(directory(where)))
    here = local_repo(org, where / "a", name="here")
    there = local_repo(org, where / "b", name="there", provider="backblaze")
    return source, here, there


def plan_rows(org: Organization) -> dict[str, Any]:
    plan = Plan.objects.get(org=org)
    return {
        **fields_of(plan),
        "source": plan.source.name,
        "copies": sorted(c.name for c in plan.copies.all()),
        "drill_from": plan.drill_from.name if plan.drill_from else None,
        "schedules": sorted(
            (s.name, s.kind, s.cron, s.tz, s.payload == {"plan": plan.pk}, s.next_run_at)
            for s in Schedule.objects.filter(org=org)
        ),
    }


def test_a_plan_and_its_schedules_are_added_changed_and_removed_alike_from_its_form_and_services(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    other = Organization.objects.create(name="Direct")
    client, actor = person(members)
    source, here, there = plan_parts(org, tmp_path)
    other_source, other_here, other_there = plan_parts(other, tmp_path)
    mark = last_seq()

    form = {"name": "nightly", "source": source.pk, "copies": [here.pk], "cron": "30 2 * * *",
            "tz": "Europe/Prague", "drill_cron": "0 5 * * 6", "drill_from": "", "keep_daily": 7,
            "keep_weekly": 4, "keep_monthly": 6, "rpo_minutes": 1560,
            "rto_minutes": 30}  # fmt: skip
    post(client, "backup_plan_add", form)
    fields = PlanFields(name="nightly", source=other_source, copies=[other_here],
                        cron="30 2 * * *", tz="Europe/Prague", drill_cron="0 5 * * 6",
                        rto_minutes=30)  # fmt: skip
    services.create_plan(fields, actor)
    assert plan_rows(org) == plan_rows(other)

    changed = {"copies": [here.pk, there.pk], "drill_from": there.pk, "cron": "0 1 * * *"}
    post(client, "backup_plan_edit", {**form, **changed}, Plan.objects.get(org=org).pk)
    moved = PlanFields(name="nightly", source=other_source, copies=[other_here, other_there],
                       cron="0 1 * * *", tz="Europe/Prague", drill_cron="0 5 * * 6",
                       drill_from=other_there, rto_minutes=30)  # fmt: skip
    services.change_plan(Plan.objects.get(org=other), moved, actor)
    assert plan_rows(org) == plan_rows(other)
    assert plan_rows(org)["drill_from"] == "there"

    post(client, "backup_plan_delete", {}, Plan.objects.get(org=org).pk)
    services.remove_plan(Plan.objects.get(org=other), actor)
    assert not Plan.objects.exists() and not Schedule.objects.exists()

    done = entries(org, mark)
    assert done == entries(other, mark)
    assert [(action, who, ip, data) for action, who, ip, _, data in done] == [
        ("backup-plan-added", actor.name, "127.0.0.1", {}),
        ("backup-plan-changed", actor.name, "127.0.0.1",
         {"changed": ["copies", "drill_from", "cron"]}),
        ("backup-plan-removed", actor.name, "127.0.0.1", {}),
    ]  # fmt: skip


def restore_from_the_ui(client: Client, plan: Plan, target: Path) -> None:
    url = reverse("backup_restore_start", args=[plan.pk])
    snapshot = re.search(
        r'name="snapshot" value="([0-9a-f]{64})"', client.get(url).content.decode()
    )
    assert snapshot
    chosen = {"repository": plan.copies.get().pk, "snapshot": snapshot.group(1),
              "path": str(target), "confirm_name": plan.name}  # fmt: skip
    r = client.post(url, {"step": "confirm", **chosen})
    assert r.status_code == 302


def restore_fields(restore: Restore) -> dict[str, Any]:
    return {**fields_of(restore), "plan": restore.plan_id, "job": restore.job_id is not None}


def what_was_done(found: list[tuple[str, str, str, str, dict[str, Any]]]) -> list[Any]:
    """Action, target and data, without the ids and timings that differ between two
    restores of the same snapshot into the same place."""
    return [(a, t, {k: v for k, v in d.items() if k not in ("restore", "seconds")})
            for a, _, _, t, d in found]  # fmt: skip


def test_a_restore_is_recorded_alike_from_the_ui_the_cli_and_services(
    org: Organization, members: dict[str, Any], tmp_path: Path
) -> None:
    """`onwatch restore` runs its restore in the foreground (its target URL may carry a
    password no job payload may hold), but leaves the same row on the plan's page and the
    same audit entries as a restore asked for in the UI."""
    client, actor = person(members)
    db = sqlite_file(tmp_path / "notes.sqlite3")
    source = services.add_source(org, "notes", SourceKind.SQLITE, path=str(db))
    plan = services.add_plan(source, "notes nightly", [local_repo(org, tmp_path / "repo")])
    assert run_backup(plan, print).state == "succeeded"
    target = tmp_path / "restored.sqlite3"

    mark = last_seq()
    restore_from_the_ui(client, plan, target)
    [job] = jobs.run_pending(kinds=["backups.restore"])
    assert job.state == JobState.SUCCEEDED, job.error
    ui = Restore.objects.get()
    from_ui = entries(org, mark)

    target.unlink()
    mark = last_seq()
    restore_in_foreground(plan, choose(plan), str(target))
    cli = Restore.objects.exclude(pk=ui.pk).get()
    from_cli = entries(org, mark)

    mark = last_seq()
    chosen = choose(plan)
    direct = services.request_restore(
        plan, chosen.repository, chosen.snapshot.id, Target(path=str(target)), actor
    )
    from_services = entries(org, mark)

    assert restore_fields(ui)["state"] == "succeeded"
    assert restore_fields(ui)["requested_by"] == actor.name
    assert restore_fields(cli) == {**restore_fields(ui), "requested_by": "cli", "job": False}
    assert restore_fields(direct) == {**restore_fields(ui), "state": "running"}
    assert [a for a, _, _, _, _ in from_ui] == ["backup-restore-requested", "backup-restored"]
    assert what_was_done(from_cli) == what_was_done(from_ui)
    assert what_was_done(from_services) == what_was_done(from_ui)[:1]
    assert [(who, ip) for _, who, ip, _, _ in from_ui + from_services] == [
        (actor.name, "127.0.0.1"), (actor.name, ""), (actor.name, "127.0.0.1")
    ]  # fmt: skip
    assert [(who, ip) for _, who, ip, _, _ in from_cli] == [("cli", ""), ("cli", "")]


def test_services_refuse_what_the_forms_refuse(org: Organization, tmp_path: Path) -> None:
    """Rules once: a caller that skips the forms meets the same ones."""
    source = services.add_source(org, "up", SourceKind.DIRECTORY, path=str(tmp_path))
    here = local_repo(org, tmp_path / "a", name="here")
    elsewhere = local_repo(org, tmp_path / "b", name="elsewhere")
    plan = services.add_plan(source, "nightly", [here])
    refused: dict[str, Callable[[], object]] = {
        "Another source is called up": lambda: services.add_source(
            org, "up", SourceKind.DIRECTORY, path=str(tmp_path)
        ),
        "Another repository is called here": lambda: services.add_repository(
            org, "here", str(tmp_path / "c"), "office"
        ),
        "Another plan is called nightly": lambda: services.add_plan(source, "nightly", [here]),
        "Say who removes old backups": lambda: services.add_repository(
            org, "vault", str(tmp_path / "c"), "office", append_only=True
        ),
        "is not a cron expression": lambda: services.add_plan(
            source, "hourly", [here], cron="every hour"
        ),
        "is not a time zone": lambda: services.add_plan(source, "hourly", [here], tz="Mars/Base"),
        "elsewhere is not one of the copies": lambda: services.add_plan(
            source, "hourly", [here], drill_from=elsewhere
        ),
        "elsewhere is not one of the copies of nightly": lambda: services.request_restore(
            plan, elsewhere, "0" * 64, Target(path=str(tmp_path / "r")), services.SYSTEM
        ),
    }
    for words, call in refused.items():
        with pytest.raises(services.Refused, match=words):
            call()
    assert list(Plan.objects.values_list("name", flat=True)) == ["nightly"]
    assert Source.objects.count() == 1 and Repository.objects.count() == 2
    assert not Restore.objects.exists() and Schedule.objects.count() == 2
