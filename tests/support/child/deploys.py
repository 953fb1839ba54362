"""Child-process functions for pipeline tests (see tests.support.child)."""

from __future__ import annotations

import json

from onwatch.core.models import Organization


def make_org(name: str) -> None:
    """The organization the `onwatch services` and `pipelines` commands work in."""
    Organization.objects.get_or_create(name=name)


def print_once_interrupted(service: str) -> None:
    """Once the service's pipeline has ended and alerted: its state, reason, steps and the
    titles of the alerts sent (a second one would come at once), as JSON."""
    import time

    from onwatch.alerts.models import Delivery
    from onwatch.deploys.models import ENDED, Pipeline
    from tests.support.child import wait_until

    pipeline = wait_until(
        lambda: Pipeline.objects.filter(service__name=service, state__in=ENDED).first()
    )
    assert pipeline is not None
    wait_until(Delivery.objects.exists)
    time.sleep(1)
    steps = [[s.name, s.state] for s in pipeline.steps.all()]
    titles = sorted(Delivery.objects.values_list("title", flat=True))
    print(json.dumps([pipeline.state, pipeline.reason, steps, titles]))


def add_pusher(org_name: str, email: str, role: str, public_key: str) -> None:
    """A member of `org_name` in `role` with `public_key` for git push, added as the page
    and the CLI add one (so onwatch writes its authorized_keys file)."""
    from django.contrib.auth import get_user_model

    from onwatch.core.models import Membership
    from onwatch.core.services import add_ssh_key

    org = Organization.objects.get(name=org_name)
    user = get_user_model().objects.create_user(username=email, email=email)
    Membership.objects.create(org=org, user=user, role=role)
    add_ssh_key(user, public_key)


def add_service(org_name: str, name: str, url: str) -> None:
    from onwatch.core.audit import SYSTEM
    from onwatch.deploys import services

    org = Organization.objects.get(name=org_name)
    services.add_service(org, services.ServiceFields(name=name, git_url=url), SYSTEM)


def print_pipelines(service: str) -> None:
    """The service's pipelines, oldest first: [trigger, triggered_by, branch, commit, state]."""
    from onwatch.deploys.models import Pipeline

    found = Pipeline.objects.filter(service__name=service).order_by("pk")
    print(json.dumps([[p.trigger, p.triggered_by, p.branch, p.commit, p.state] for p in found]))


def use_pushed_copy(name: str) -> None:
    """The service takes the copy people push to onwatch as its repository."""
    from onwatch.core.audit import SYSTEM
    from onwatch.deploys import services
    from onwatch.deploys.models import Service

    service = Service.objects.get(name=name)
    copy = str(services.pushed_repository(service))
    fields = services.ServiceFields(name=service.name, git_url=copy, branch=service.branch)
    services.change_service(service, fields, SYSTEM)


def add_backup_plan(org_name: str, folder: str) -> None:
    """A backup plan "nightly" of a folder to a local restic repository, under `folder`."""
    from pathlib import Path

    from onwatch.backups import services
    from tests.support.backups import directory, local_repo, plan_for

    org = Organization.objects.get(name=org_name)
    where = Path(folder)
    source = services.add_source(
        org, "uploads", "directory", path=str(directory(where / "uploads"))
    )
    plan_for(source, [local_repo(org, where / "restic")])


def print_backup_settings(service: str) -> None:
    """The service's backup plan and, per deploy-queued audit entry, its skip_backup."""
    from onwatch.core.models import AuditEntry
    from onwatch.deploys.models import Service

    found = Service.objects.select_related("backup_plan").get(name=service)
    print(found.backup_plan.name if found.backup_plan else "-")
    for entry in AuditEntry.objects.filter(action="deploy-queued").order_by("seq"):
        print(entry.actor, entry.data["skip_backup"])


def add_checked_host(org_name: str, name: str, ready: bool) -> None:
    """An SSH host as its check left it (`ready`: all there); never reached."""
    from onwatch.deploys.models import Host

    user, address = name.split("@")
    org = Organization.objects.get(name=org_name)
    Host.objects.create(org=org, name=name, user=user, address=address, ready=ready)


def mark_host_ready(name: str) -> None:
    """The host as a passed check leaves it (its check itself: test_hosts.py)."""
    from django.utils import timezone

    from onwatch.deploys.models import Host

    Host.objects.filter(name=name).update(ready=True, checked_at=timezone.now())
