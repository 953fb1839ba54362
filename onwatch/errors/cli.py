"""`onwatch errors add-project NAME` (prints the DSN) and `onwatch errors list`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from onwatch.core.commands import AddCommand, organization
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    pass


def register(add: AddCommand) -> None:
    group = add("errors", lambda a: 0, "Error tracking: projects and their DSNs.")
    sub = group.add_subparsers(dest="errors_command", required=True, metavar="ACTION")
    adding = add("add-project", cmd_add_project, "Add a project and print its DSN.", sub)
    adding.add_argument("name", help="the project's name")
    adding.add_argument("--org", help="the organization's name (needed when there are several)")
    listing = add("list", cmd_list, "List the projects and their DSNs.", sub)
    listing.add_argument("--org", help="the organization's name (needed when there are several)")


def cmd_add_project(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.errors import services

    org = organization(args.org)
    try:
        made = services.add_project(org, args.name, CLI)
    except services.Refusal as e:
        fail(str(e))
    print(services.dsn(made))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.errors import services
    from onwatch.errors.models import Project

    org = organization(args.org)
    for project in Project.objects.filter(org=org):
        state = "DSN revoked" if project.key_revoked else services.dsn(project)
        print(f"{project.name}\t{state}")
    return 0
