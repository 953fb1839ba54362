"""`onwatch services add|list|secret|delete` and `onwatch pipelines run SERVICE [--wait]`;
`services domain`, `deploy` and `rollback` are in deploy_cli.py."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from onwatch.core.commands import AddCommand, organization
from onwatch.deploys import deploy_cli
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    from onwatch.core.models import Organization
    from onwatch.deploys.models import Service

POLL_SECONDS = 0.5
# Still queued after this long: say so, so nobody waits on a worker that is not running.
QUEUED_NOTE_SECONDS = 10.0


def register(add: AddCommand) -> None:
    from onwatch.deploys import hostcli

    hostcli.register(add)
    group = add("services", lambda a: 0, "The team's apps whose tests onwatch runs.")
    sub = group.add_subparsers(dest="services_command", required=True, metavar="ACTION")
    adding = add("add", cmd_services_add, "Add a service (a git repository and branch).", sub)
    adding.add_argument("name", help="the service's name")
    adding.add_argument("git_url", metavar="URL", help="any address git can fetch")
    adding.add_argument("--branch", default="main", help="the branch to test (default: main)")
    adding.add_argument("--org", help="the organization's name (needed when there are several)")
    secret = add(
        "secret", cmd_services_secret, "Set a secret of a service (its value from stdin).", sub
    )
    secret.add_argument("service", help="the service's name")
    secret.add_argument("name", help="the environment variable the steps read it from")
    secret.add_argument("--org", help="the organization's name (needed when there are several)")
    delete = add(
        "delete",
        cmd_services_delete,
        "Delete a service, its pipelines, logs, secrets and caches (stops its running ones).",
        sub,
    )
    delete.add_argument("service", help="the service's name")
    delete.add_argument(
        "--confirm", metavar="NAME", help="the service's name again (asked for when not given)"
    )
    delete.add_argument("--org", help="the organization's name (needed when there are several)")
    listing = add("list", cmd_services_list, "List the services and their last pipeline.", sub)
    listing.add_argument("--org", help="the organization's name (needed when there are several)")
    deploy_cli.register(add, sub)
    group = add("pipelines", lambda a: 0, "Pipelines: a service's tests, run by a worker.")
    sub = group.add_subparsers(dest="pipelines_command", required=True, metavar="ACTION")
    run = add("run", cmd_pipelines_run, "Run a service's pipeline now.", sub)
    run.add_argument("service", help="the service's name")
    run.add_argument("--org", help="the organization's name (needed when there are several)")
    serve = add("git-serve", cmd_git_serve, argparse.SUPPRESS)
    serve.add_argument("--env-file", required=True, help="the settings to run with (JSON)")
    serve.add_argument("key_id", type=int, help="the SSH key the person signed in with")
    run.add_argument(
        "--wait",
        action="store_true",
        help="print its log as it runs; exit 0 when it succeeds, 1 when it does not",
    )


def cmd_services_add(args: argparse.Namespace) -> int:
    prepare()
    from pydantic import ValidationError

    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    org = organization(args.org)
    try:
        fields = services.ServiceFields(name=args.name, git_url=args.git_url, branch=args.branch)
        made = services.add_service(org, fields, CLI)
    except ValidationError as e:
        first = e.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    except services.Refusal as e:
        fail(str(e))
    print(f"onwatch: added {made.name}; give its repository this deploy key:")
    print(made.deploy_public_key)
    return 0


def cmd_services_secret(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    service = find_service(organization(args.org), args.service)
    # From stdin, never the command line: that would leave it in the shell's history and
    # in every process listing.
    value = sys.stdin.read().removesuffix("\n")
    if not value:
        fail("give the secret's value on standard input, e.g. onwatch services secret … < file")
    try:
        services.set_secret(service, args.name, value, CLI)
    except services.Refusal as e:
        fail(str(e))
    print(f"onwatch: saved the secret {args.name} of {service.name}")
    return 0


def cmd_services_delete(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    service = find_service(organization(args.org), args.service)
    confirm = args.confirm
    if confirm is None:
        print(
            f"Delete {service.name} with its pipelines, logs, secrets and caches? "
            "Type its name to confirm: ",
            end="",
            flush=True,
        )
        confirm = sys.stdin.readline().strip()
    try:
        gone = services.delete_service(service, confirm, CLI)
    except services.Refusal as e:
        fail(f"{e}; nothing was deleted")
    stopped = f" ({len(gone.cancelled)} stopped)" if gone.cancelled else ""
    print(f"onwatch: deleted {service.name} and its {gone.pipelines} pipelines{stopped}")
    return 0


def cmd_services_list(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.deploys.models import Service

    for s in Service.objects.filter(org=organization(args.org)):
        last = s.pipelines.first()
        shown = f"#{last.pk} {last.state}" if last else "no pipeline yet"
        print(f"{s.name}\t{s.git_url}\t{s.branch}\t{shown}")
    return 0


def find_service(org: Organization, name: str) -> Service:
    from onwatch.deploys.models import Service

    found = Service.objects.filter(org=org, name=name).first()
    if found is None:
        names = ", ".join(Service.objects.filter(org=org).values_list("name", flat=True))
        fail(f"there is no service {name!r} (there are: {names or 'none yet'})")
    assert found is not None
    return found


def cmd_pipelines_run(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    service = find_service(organization(args.org), args.service)
    pipeline = services.run_pipeline(service, CLI, "cli")
    print(f"onwatch: pipeline #{pipeline.pk} of {service.name} ({pipeline.branch}) is queued")
    if not args.wait:
        return 0
    return follow(pipeline.pk)


def follow(pipeline_id: int) -> int:
    """Print the pipeline's log as a worker writes it; 0 when it succeeded."""
    from onwatch.core.models import JobLogLine
    from onwatch.deploys.models import ENDED, Pipeline, State

    after, noted, since = 0, False, time.monotonic()
    while True:
        pipeline = Pipeline.objects.get(pk=pipeline_id)
        waited = time.monotonic() - since
        if not noted and pipeline.state == State.QUEUED and waited > QUEUED_NOTE_SECONDS:
            print(
                f"onwatch: pipeline #{pipeline.pk} is still queued; it starts once a worker "
                "has a free pipelines slot (is `onwatch up` or `onwatch worker` running?)",
                file=sys.stderr,
                flush=True,
            )
            noted = True
        assert pipeline.job_id is not None  # run_pipeline queues its job with it
        rows = list(
            JobLogLine.objects.filter(job_id=pipeline.job_id, id__gt=after)
            .order_by("id")
            .values_list("id", "text")[:1000]
        )
        for _, text in rows:
            print(text, flush=True)
        after = rows[-1][0] if rows else after
        if pipeline.state in ENDED and not rows:
            break
        if not rows:
            time.sleep(POLL_SECONDS)
    said = f": {pipeline.reason}" if pipeline.reason else ""
    print(f"onwatch: pipeline #{pipeline.pk} {pipeline.state}{said}", file=sys.stderr)
    return 0 if pipeline.state == State.SUCCEEDED else 1


def cmd_git_serve(args: argparse.Namespace) -> int:
    """Run by sshd for a `git push` to onwatch (core/pushkeys.py writes the command): the
    settings come from the file onwatch wrote, as sshd passes on no environment."""
    import json
    import os
    from pathlib import Path

    try:
        os.environ.update(json.loads(Path(args.env_file).read_text()))
    except (OSError, ValueError) as e:
        fail(f"cannot read onwatch's settings for git push ({e}); add your SSH key again")
    prepare()
    from onwatch.deploys import git, gitserve

    address = os.environ.get("SSH_CONNECTION", "").split(" ")[0]
    try:
        return gitserve.serve(args.key_id, os.environ.get("SSH_ORIGINAL_COMMAND", ""), address)
    except (gitserve.Refused, git.GitError) as e:
        fail(str(e))
    return 2
