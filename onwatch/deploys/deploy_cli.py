"""`onwatch services domain SERVICE DOMAIN`, `onwatch deploy SERVICE [--commit SHA]` and
`onwatch rollback SERVICE [--to ID]`: each queues its work for a worker and says so; a
refusal is one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC
from typing import Any

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare

POLL_SECONDS = 0.5


def register(add: AddCommand, services_sub: Any) -> None:
    from onwatch.deploys import placecli

    placecli.register(add, services_sub)
    domain = add(
        "domain",
        cmd_services_domain,
        "Set where a service answers (through onwatch's Caddy); '' takes the domain off.",
        services_sub,
    )
    domain.add_argument("service", help="the service's name")
    domain.add_argument("domain", help="e.g. shop.example.com")
    domain.add_argument(
        "--no-auto-deploy",
        action="store_true",
        help="do not deploy each green pipeline of its branch by itself",
    )
    domain.add_argument("--org", help="the organization's name (needed when there are several)")
    watch = add(
        "watch",
        cmd_services_watch,
        "How long each new release is watched after its deploy, and what makes onwatch roll "
        "it back on its own; without options, says what is set.",
        services_sub,
    )
    watch.add_argument("service", help="the service's name")
    watch.add_argument("--seconds", type=int, help="how long (0: no watch, no rollback)")
    watch.add_argument("--min-requests", type=int, help="answers needed to judge")
    watch.add_argument("--error-percent", type=float, help="5xx share it must exceed")
    watch.add_argument(
        "--error-factor", type=float, help="times the share of the release before it"
    )
    watch.add_argument(
        "--latency-factor",
        type=float,
        help="times the mean latency of the release before it (0: latency does not count)",
    )
    watch.add_argument("--latency-ms", type=int, help="mean latency (ms) it must exceed too")
    watch.add_argument("--org", help="the organization's name (needed when there are several)")
    backup = add(
        "backup-plan",
        cmd_services_backup_plan,
        "Name the backup plan a deploy runs before a release's migrations; '' for none.",
        services_sub,
    )
    backup.add_argument("service", help="the service's name")
    backup.add_argument("plan", help="the backup plan's name, or '' for none")
    backup.add_argument("--org", help="the organization's name (needed when there are several)")
    deploy = add("deploy", cmd_deploy, "Build a commit of a service and make it live.")
    deploy.add_argument("service", help="the service's name")
    deploy.add_argument("--commit", default="", help="the commit (default: the branch's newest)")
    deploy.add_argument(
        "--skip-backup",
        action="store_true",
        help="on purpose, without the backup before migrations of the service's plan (audited)",
    )
    rollback = add(
        "rollback", cmd_rollback, "Make the previous (or a chosen kept) release live again."
    )
    rollback.add_argument("service", help="the service's name")
    rollback.add_argument("--to", type=int, metavar="ID", help="the kept release to go back to")
    group = add("releases", lambda a: 0, "A service's releases, kept for rollbacks.")
    sub = group.add_subparsers(dest="releases_command", required=True, metavar="ACTION")
    listing = add("list", cmd_releases_list, "List a service's releases, newest first.", sub)
    listing.add_argument("service", help="the service's name")
    listing.add_argument("--org", help="the organization's name (needed when there are several)")
    block = add(
        "no-rollback",
        cmd_releases_no_rollback,
        'Mark a release "no rollback past this" (its release command changed data for good).',
        sub,
    )
    block.add_argument("service", help="the service's name")
    block.add_argument("release", type=int, metavar="ID", help="the release")
    block.add_argument("--why", default="", help="what it changed, for whoever tries later")
    block.add_argument("--off", action="store_true", help="take the mark off again")
    block.add_argument("--org", help="the organization's name (needed when there are several)")
    for parser in (deploy, rollback):
        parser.add_argument("--org", help="the organization's name (needed when there are several)")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for its end; print its timeline; exit 0 when it succeeded, 1 if not",
        )


def cmd_services_domain(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    try:
        services.set_domain(service, args.domain, not args.no_auto_deploy, CLI)
    except services.Refusal as e:
        fail(str(e))
    auto = "each green pipeline of its branch deploys" if service.auto_deploy else "deploy by hand"
    where = f"answers at {service.domain}" if service.domain else "has no domain"
    print(f"onwatch: {service.name} {where}; {auto}")
    return 0


def cmd_services_watch(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    chosen = (args.seconds, args.min_requests, args.error_percent, args.error_factor)
    if any(v is not None for v in (*chosen, args.latency_factor, args.latency_ms)):
        try:
            services.set_watch(
                service,
                service.watch_seconds if args.seconds is None else args.seconds,
                service.watch_min_requests if args.min_requests is None else args.min_requests,
                service.watch_error_percent if args.error_percent is None else args.error_percent,
                service.watch_error_factor if args.error_factor is None else args.error_factor,
                CLI,
                latency_factor=args.latency_factor,
                latency_ms=args.latency_ms,
            )
        except services.Refusal as e:
            fail(str(e))
    print(f"onwatch: {service.name}: {services.watch_rule(service)}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    try:
        deploy = services.queue_deploy(
            service, CLI, "cli", commit=args.commit, skip_backup=args.skip_backup
        )
    except services.Refusal as e:
        fail(str(e))
    print(f"onwatch: deploy #{deploy.pk} of {service.name} is queued")
    return follow(deploy.pk) if args.wait else 0


def cmd_services_backup_plan(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.backups import services as backup_services
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    org = organization(args.org)
    service = find_service(org, args.service)
    try:
        plan = backup_services.plan_named(org, args.plan.strip()) if args.plan.strip() else None
        said = services.set_backup_plan(service, plan, CLI)
    except (services.Refusal, backup_services.Refused) as e:
        fail(str(e))
    print(f"onwatch: {said}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    try:
        deploy = services.queue_rollback(service, CLI, "cli", to=args.to)
    except services.Refusal as e:
        fail(str(e))
    assert deploy.release is not None
    print(f"onwatch: rollback #{deploy.pk} of {service.name} to {deploy.release} is queued")
    return follow(deploy.pk) if args.wait else 0


def follow(deploy_id: int) -> int:
    """Wait for the deploy's end, then print its timeline and how it ended."""
    from onwatch.deploys import services
    from onwatch.deploys.models import ENDED, Deploy, State, Watch, WatchState

    deploy = Deploy.objects.get(pk=deploy_id)
    while deploy.state not in ENDED:
        time.sleep(POLL_SECONDS)
        deploy.refresh_from_db()
    for step in deploy.steps:
        took = f"{step['seconds']:.1f} s" if step["seconds"] is not None else "—"
        print(
            f"{step['name']}\t{took}\t{services.step_result(step, deploy.state)}\t{step['detail']}"
        )
    said = f": {deploy.reason}" if deploy.reason else f"; {deploy.live_after} is live"
    print(f"onwatch: {deploy.kind} #{deploy.pk} {deploy.state}{said}", file=sys.stderr)
    if watching := Watch.objects.filter(deploy=deploy, state=WatchState.WATCHING).first():
        # The command ends with the deploy, its watch does not: a rollback may yet follow.
        print(
            f"onwatch: its watch goes on until {watching.until.astimezone(UTC):%H:%M:%S} UTC; "
            "onwatch rolls the release back by itself if it answers clearly worse",
            file=sys.stderr,
        )
    return 0 if deploy.state == State.SUCCEEDED else 1


def cmd_releases_list(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    live, rolled_back = services.live_release(service), services.rolled_back_notes(service)
    for r in service.releases.order_by("-pk"):
        notes = ["live"] if r == live else []
        notes += [f"no rollback past this: {r.no_rollback_why}"] if r.no_rollback_past else []
        notes += [rolled_back[r.pk]] if r.pk in rolled_back else []
        print(f"{r.pk}\t{r.commit[:12]}\t{r.state}\t{'; '.join(notes)}")
    return 0


def cmd_releases_no_rollback(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import services
    from onwatch.deploys.cli import find_service

    service = find_service(organization(args.org), args.service)
    release = service.releases.filter(pk=args.release).first()
    if release is None:
        fail(f"{service.name} has no release {args.release}")
    assert release is not None
    try:
        services.mark_no_rollback_past(release, args.why, CLI, on=not args.off)
    except services.Refusal as e:
        fail(str(e))
    said = "is no longer" if args.off else "is"
    print(f'onwatch: {release} {said} marked "no rollback past this"')
    return 0
