"""Seeds run in a child process against the onwatch under test (it holds the database),
for the browser tests: each writes its objects and prints their ids as JSON. seed_backups
and seed_jobs run through tests.support.child.call(..., migrate=True), which prepares
onwatch first; seed_status_page prepares it itself."""

from __future__ import annotations

import json
from pathlib import Path

# The owner every seeded onwatch has (TOTP enrolled; the seed prints its secret).
EMAIL, PASSWORD = "owner@bakery.example", "a long and unusual passphrase 42"
DRILLS = 3


def seed_backups(root: str, damage: bool = False) -> None:
    """Run in a child process against the onwatch under test: an owner with TOTP, and a
    SQLite plan backed up once and drilled three times with the real restic; with
    `damage`, the repository's packs are then damaged and a fourth drill fails."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.contrib.auth import get_user_model

    from onwatch.backups import services
    from onwatch.backups.drills import run_drill
    from onwatch.backups.models import SourceKind
    from onwatch.backups.runs import run_backup
    from onwatch.core.models import Membership, Organization
    from tests.support.backups import sqlite_file

    org = Organization.objects.create(name="Bakery")
    user = get_user_model().objects.create_user(username=EMAIL, email=EMAIL, password=PASSWORD)
    Membership.objects.create(org=org, user=user, role="owner")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    base = Path(root)
    source = services.add_source(
        org, "orders db", SourceKind.SQLITE, path=str(sqlite_file(base / "orders.sqlite3"))
    )
    repository = services.add_repository(org, "nas", str(base / "repo"), provider="office")
    plan = services.add_plan(source, "orders nightly", [repository])
    run_backup(plan, print)
    drills = [run_drill(plan, print) for _ in range(DRILLS)]
    assert all(d.verified for d in drills)
    if damage:
        from tests.support.backups import damage_data_packs

        damage_data_packs(base / "repo")
        assert run_drill(plan, print).rto_seconds is None
    print(json.dumps({"plan": plan.pk, "secret": secret}))


def seed_jobs() -> None:
    """Run in a child process against the onwatch under test: an owner with TOTP and a
    job that runs (no worker: the test writes its lines) with one line logged."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.contrib.auth import get_user_model

    from onwatch.core import jobs
    from onwatch.core.models import Job, JobState, Membership, Organization

    org = Organization.objects.create(name="Bakery")
    user = get_user_model().objects.create_user(username=EMAIL, email=EMAIL, password=PASSWORD)
    Membership.objects.create(org=org, user=user, role="owner")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    job = Job.objects.create(org=org, kind="core.sleep", queue="long", state=JobState.RUNNING)
    jobs.append_line(job.pk, "10:00:00 copying the first table")
    print(json.dumps({"job": job.pk, "secret": secret}))


# Bars (by days ago) the seed_status_page makes red for the API; every other day of the last 60 is
# green for both services, and older days have no data.
RED_DAYS = (3, 10, 11)


def seed_status_page() -> None:
    """Run in a child process against the onwatch under test: migrate its database, then
    make a status page with two services and 60 days of daily rollups."""
    from onwatch.startup import prepare

    prepare(migrate=True)
    from django.utils import timezone

    from onwatch.core.models import Organization
    from onwatch.uptime import status_page
    from onwatch.uptime.models import Monitor, Rollup, StatusPage, StatusPageItem

    org = Organization.objects.create(name="Acme")
    page = StatusPage.objects.create(org=org, slug="acme", title="Acme status")
    days = status_page.bar_days(timezone.now())
    for n, (name, label, state) in enumerate(
        [("shop-internal", "Web shop", "up"), ("api-internal", "Public API", "down")]
    ):
        m = Monitor.objects.create(org=org, name=name, kind="http", state=state)
        StatusPageItem.objects.create(page=page, monitor=m, label=label, position=n)
        for ago in range(1, 61):
            bad = label == "Public API" and ago in RED_DAYS
            Rollup.objects.create(
                monitor=m, period=Rollup.DAY, start=days[-1 - ago], checks=1440,
                failures=720 if bad else 0,
            )  # fmt: skip
    print(json.dumps({"slug": page.slug}))
