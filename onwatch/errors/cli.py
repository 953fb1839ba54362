"""`onwatch errors add-project NAME` (prints the DSN), `onwatch errors list`, and the
issue commands: `issues PROJECT`, `resolve`, `unresolve`, `ignore`, `merge`, `split`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from onwatch.core.commands import AddCommand, organization
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    from onwatch.errors.models import Issue


def register(add: AddCommand) -> None:
    group = add("errors", lambda a: 0, "Error tracking: projects and their DSNs.")
    sub = group.add_subparsers(dest="errors_command", required=True, metavar="ACTION")
    adding = add("add-project", cmd_add_project, "Add a project and print its DSN.", sub)
    adding.add_argument("name", help="the project's name")
    adding.add_argument("--org", help="the organization's name (needed when there are several)")
    listing = add("list", cmd_list, "List the projects and their DSNs.", sub)
    listing.add_argument("--org", help="the organization's name (needed when there are several)")
    register_issues(add, sub)


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


def register_issues(add: AddCommand, sub: argparse._SubParsersAction[Any]) -> None:
    """`onwatch errors issues PROJECT`, `resolve`, `unresolve`, `ignore`, `merge`, `split`."""
    listing = add("issues", cmd_issues, "List a project's issues in one state.", sub)
    listing.add_argument("project", help="the project's name")
    listing.add_argument(
        "--state", default="unresolved", help="unresolved (default), resolved, ignored or all"
    )
    listing.add_argument("--org", help="the organization's name (needed when there are several)")
    resolving = add("resolve", cmd_resolve, "Resolve an issue (in a release).", sub)
    resolving.add_argument("issue", type=int, help="the issue's number (see `errors issues`)")
    which = resolving.add_mutually_exclusive_group()
    which.add_argument(
        "--release",
        default="",
        help="the release it is fixed in (default: the newest it was seen in)",
    )
    which.add_argument(
        "--next", action="store_true", help="fixed in the next release, not made yet"
    )
    reopening = add("unresolve", cmd_unresolve, "Reopen an issue.", sub)
    reopening.add_argument("issue", type=int, help="the issue's number")
    ignoring = add("ignore", cmd_ignore, "Ignore an issue until a time, a count or a rate.", sub)
    ignoring.add_argument("issue", type=int, help="the issue's number")
    ignoring.add_argument("--until", help="until this time (YYYY-MM-DD HH:MM, UTC)")
    ignoring.add_argument("--events", type=int, help="until this many more events")
    ignoring.add_argument("--per-hour", type=int, help="until more than this many an hour")
    merging = add("merge", cmd_merge, "Merge issues into the first one named.", sub)
    merging.add_argument("issues", type=int, nargs="+", help="the issue kept, then the others")
    splitting = add("split", cmd_split, "Take an event's group back out of a merged issue.", sub)
    splitting.add_argument("issue", type=int, help="the issue it was merged into")
    splitting.add_argument("event_id", help="an event of the group (its id as the SDK gave it)")


def _events(n: int) -> str:
    return f"{n} event{'' if n == 1 else 's'}"


def issue_of(pk: int) -> Issue:
    from onwatch.errors.models import Issue

    found = Issue.objects.select_related("project__org").filter(pk=pk).first()
    if found is None:
        fail(f"there is no issue {pk}; list them with onwatch errors issues PROJECT")
    assert found is not None
    return found


def cmd_issues(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.errors.issue_views import STATE_FILTERS
    from onwatch.errors.models import Issue, Project

    if args.state not in STATE_FILTERS:
        fail(f"--state must be one of: {', '.join(STATE_FILTERS)}")
    project = Project.objects.filter(org=organization(args.org), name=args.project).first()
    if project is None:
        fail(f"there is no project {args.project!r}; see onwatch errors list")
    found = Issue.objects.filter(project=project, state__in=STATE_FILTERS[args.state])
    for i in found:
        print(
            f"{i.pk}\t{i.state}\t{_events(i.event_count)}\t{i.last_seen:%Y-%m-%d %H:%M}\t{i.title}"
        )
    return 0


def _change(pk: int, action: str, **how: Any) -> int:
    from django.utils import timezone

    from onwatch.core.audit import CLI
    from onwatch.errors import services

    issue = issue_of(pk)
    try:
        services.apply([issue], action, CLI, timezone.now(), **how)
    except services.Refusal as e:
        fail(str(e))
    issue.refresh_from_db()
    print(f"{issue.pk}\t{issue.state}\t{issue.title}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    prepare()
    return _change(args.issue, "resolve-next" if args.next else "resolve", release=args.release)


def cmd_unresolve(args: argparse.Namespace) -> int:
    prepare()
    return _change(args.issue, "unresolve")


def cmd_ignore(args: argparse.Namespace) -> int:
    prepare()
    from datetime import UTC, datetime

    from onwatch.errors import services

    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError:
            fail("--until takes a time as YYYY-MM-DD HH:MM (UTC)")
        assert until is not None
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
    ignore = services.Ignore(until, args.events, args.per_hour)
    if ignore == services.Ignore():
        fail("say until when: --until TIME, --events N or --per-hour N")
    return _change(args.issue, "ignore", until=ignore)


def cmd_merge(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.errors import services

    found = [issue_of(pk) for pk in args.issues]
    if len({i.project.org_id for i in found}) > 1:
        fail("these issues are in different organizations")
    try:
        kept = services.merge(found[0], found[1:], CLI)
    except services.Refusal as e:
        fail(str(e))
    print(f"{kept.pk}\t{_events(kept.event_count)}\t{kept.title}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    prepare()
    from django.utils import timezone

    from onwatch.core.audit import CLI
    from onwatch.errors import services

    issue = issue_of(args.issue)
    event = issue.events.filter(event_id=args.event_id.replace("-", "").lower()).first()
    if event is None:
        fail(f"issue {issue.pk} has no event {args.event_id}")
    assert event is not None
    try:
        group = services.split(event, CLI, timezone.now())
    except services.Refusal as e:
        fail(str(e))
    print(f"{group.pk}\t{_events(group.event_count)}\t{group.title}")
    return 0
