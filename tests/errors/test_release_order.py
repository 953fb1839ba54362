"""Releases named by version, not deployed by onwatch (onwatch/errors/order.py): an issue
"resolved in the next release" is resolved by the first event of a later version in
semantic-version order, and an event of the same or an older version never reopens it."""

from __future__ import annotations

import uuid
from itertools import pairwise
from typing import Any

import pytest
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.errors import intake, order, services, states
from onwatch.errors.models import Issue, Project
from onwatch.errors.order import version_key

pytestmark = pytest.mark.django_db


def crash(release: str, message: str = "boom") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "release": release,
        "exception": {"values": [{"type": "KeyError", "value": message}]},
    }


def send(project: Project, *events: dict[str, Any]) -> None:
    incoming = intake.Incoming(project.pk, project.public_key, "192.0.2.9", list(events))
    services.take(incoming, timezone.now())


def state(issue: Issue) -> tuple[str, str, str]:
    issue.refresh_from_db()
    return issue.state, issue.resolved_in, issue.regressed_in


@pytest.fixture
def project(org: Organization) -> Project:
    return services.add_project(org, "shop", SYSTEM)


@pytest.mark.parametrize(
    ("seen", "older", "later"),
    [
        (["myapp@1.4.2"], ["myapp@1.4.1", "myapp@1.4.2"], "myapp@1.4.3"),
        # Semver's pre-releases of any name come before their release.
        (["myapp@1.4.2"], ["myapp@1.4.2-canary.1"], "myapp@1.5.0-canary.1"),
        (["myapp@1.4.2", "myapp@1.4.2-hotfix.1"], ["myapp@1.4.2-hotfix.2"], "myapp@1.4.3"),
        (["myapp@2.0.0-alpha.1", "myapp@2.0.0-alpha.beta"], ["myapp@2.0.0-alpha.2"],
         "myapp@2.0.0-beta"),
        # Build metadata orders nothing: 1.4.2+43 is the same version as 1.4.2+42.
        (["myapp@1.4.2+42"], ["myapp@1.4.2+43", "myapp@1.4.2"], "myapp@1.4.3+1"),
    ],
)  # fmt: skip
def test_the_next_version_resolves_it_and_the_same_or_older_never_reopen_it(
    project: Project, seen: list[str], older: list[str], later: str
) -> None:
    send(project, *(crash(name) for name in seen))
    issue = Issue.objects.get()
    services.resolve_in_next_release(issue, SYSTEM, timezone.now())
    newest = max(seen, key=lambda name: version_key(name) or ())
    assert issue.resolved_after == newest
    for name in older:  # old clients, and the release out when it was marked
        send(project, crash(name))
        assert state(issue) == ("resolved-next", "", "")
    send(project, crash(later, message="another issue"))  # the next version is out
    assert state(issue) == ("resolved", later, "")
    for name in older:
        send(project, crash(name))
        assert state(issue) == ("resolved", later, "")
    send(project, crash(later))  # and the fix did not fix it
    assert state(issue) == ("unresolved", later, later)


def ascending(names: list[str]) -> bool:
    keys = [version_key(name) for name in names]
    return all(a is not None and b is not None and a < b for a, b in pairwise(keys))


def test_versions_sort_as_semver_says() -> None:
    # Semver 2.0.0, section 11's example, then PEP 440's spellings of the same.
    ordered = [
        "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1", "1.10.0", "2.0.0",
    ]  # fmt: skip
    assert ascending(ordered)
    assert ascending(["1.0.0.dev1", "1.0.0a1", "1.0.0b2", "1.0.0rc1", "1.0.0"])
    assert version_key("shop@1.4.2+43") == version_key("1.4.2+42") == version_key("v1.4.2.0")
    assert version_key("blue") is None and version_key("a" * 40) is None


# Each pair older first. A pre-release's number is a number, however it is spelt; a build
# `git describe` names ("v1.4.2-3-gabc1234": 3 commits after v1.4.2) comes after its tag,
# by how many commits, and before the next version.
OLDER_NEWER = [
    ("1.2.0-rc9", "1.2.0-rc10"),
    ("v2.0.0-beta2", "v2.0.0-beta10"),
    ("1.2.0-rc1", "1.2.0-rc.2"),
    ("1.2.0-rc.1", "1.2.0-rc2"),
    ("1.2.0-rc10", "1.2.0"),
    ("1.0.0-dev1", "1.0.0-alpha"),
    ("v1.4.2", "v1.4.2-3-gabc1234"),
    ("v1.4.2-3-gabc1234", "v1.4.2-12-g0123abcd"),
    ("v1.4.2-12-g0123abcd", "v1.4.3-rc.1"),
    ("shop@1.4.2-3-gabc1234", "shop@1.4.3"),
    ("v2.0.0-rc.1", "v2.0.0-rc.1-2-gabc1234"),
    ("v2.0.0-rc.1-2-gabc1234", "v2.0.0-rc.2"),
]


@pytest.mark.parametrize(("older", "newer"), OLDER_NEWER)
def test_numbered_pre_releases_and_described_builds_sort_by_their_numbers(
    project: Project, older: str, newer: str
) -> None:
    assert order.known_order(project, newer, older) == 1
    assert order.known_order(project, older, newer) == -1
    assert order.known_newer(project, newer, older) is True
    assert order.known_newer(project, older, newer) is False
    assert order.newest_of(project, [older, newer]) == newer
    assert order.newest_of(project, [newer, older]) == newer


@pytest.mark.parametrize(
    "same", [("1.2.0-rc1", "1.2.0-rc.1", "1.2.0rc1", "1.2.0-rc-1"), ("v1.4.2", "v1.4.2-0-gabc1234")]
)
def test_spellings_of_one_release_are_the_same_release(project: Project, same: list[str]) -> None:
    for a, b in pairwise(same):
        assert order.known_order(project, a, b) == order.known_order(project, b, a) == 0


@pytest.mark.parametrize(
    ("resolved", "event", "reopens"),
    [
        ("1.2.0-rc9", "1.2.0-rc10", True),
        ("1.2.0-rc10", "1.2.0-rc9", False),
        ("v1.4.2", "v1.4.2-3-gabc1234", True),
        ("v1.4.2-3-gabc1234", "v1.4.2", False),
    ],
)
def test_a_resolved_issue_reopens_on_a_later_build_only(
    project: Project, resolved: str, event: str, reopens: bool
) -> None:
    # Seen in the order that says the opposite: the order events first named the two
    # releases (what decides for names that are not versions) must not decide here.
    for name in [event, resolved] if reopens else [resolved, event]:
        send(project, crash(name, message="another issue"))
    send(project, crash("0.9.0"))
    issue = Issue.objects.get(title="KeyError: boom")
    services.resolve(issue, resolved, SYSTEM, timezone.now())
    assert states.reopens(project, issue, event) is reopens
