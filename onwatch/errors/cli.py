"""`onwatch errors add-project NAME` (prints the DSN) and `onwatch errors list`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    from onwatch.core.models import Organization


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


def organization(name: str | None) -> Organization:
    """The one organization, or the one named; fail() with what there is otherwise."""
    from onwatch.core.models import Organization

    orgs = list(Organization.objects.order_by("id"))
    found = [o for o in orgs if name is None or o.name == name]
    if not orgs:
        fail("there is no organization yet; create the owner with onwatch createowner")
    if not found:
        fail(f"there is no organization {name!r} (there are: {', '.join(o.name for o in orgs)})")
    if len(found) > 1:
        fail(f"there are several organizations ({', '.join(o.name for o in orgs)}); add --org")
    return found[0]
