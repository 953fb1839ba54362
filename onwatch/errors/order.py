"""Which of two releases of a project is the newer, so an event from an older release
never reopens an issue resolved in a newer one. In order of trust: the order onwatch made
the linked service's releases live (an SDK names them by commit), then version numbers
(PEP 440 or semver-ish: "1.2.0", "v1.2.1", "shop@2.0.0-rc.1", git describe's
"v1.2.1-3-gabc1234"), then the order the project's events first named them."""

from __future__ import annotations

import re
from datetime import datetime

from onwatch.errors.models import Project, Release

# A version: numbers, then a pre-release (semver's "-rc.1", "-canary.3", "-alpha.beta";
# PEP 440's "rc1", ".dev3") and build metadata ("+42", which orders nothing).
VERSION = re.compile(
    r"^v?(?P<nums>\d+(?:\.\d+)*)"
    r"(?:-(?P<semver>[0-9a-z-]+(?:\.[0-9a-z-]+)*)"
    r"|[-.]?(?P<pre>a|alpha|b|beta|c|rc|pre|preview|dev)[-.]?(?P<n>\d*))?"
    r"(?:\+[\w.-]*)?$",
    re.IGNORECASE,
)
# `git describe`'s name of a build N commits after its tag: "v1.4.2-3-gabc1234". Without
# this it would read as a pre-release of 1.4.2, before the tag it was built after.
DESCRIBED = re.compile(r"-(?P<after>\d+)-g[0-9a-f]{7,}$", re.IGNORECASE)
# A pre-release's words: its letter runs and number runs, so "rc10" is "rc" then 10, after
# "rc9", and "rc1", "rc.1" and "rc-1" are one pre-release (as PEP 440 reads them).
WORD = re.compile(r"\d+|[a-z]+")
# PEP 440's spellings, as semver's words: "1.2.0rc1" is "1.2.0-rc.1"; "dev" comes first,
# before "alpha", as in PEP 440.
PRE_WORDS = {"a": "alpha", "b": "beta", "c": "rc", "pre": "rc", "preview": "rc", "dev": "0dev"}
Key = tuple[object, ...]


def version_key(release: str) -> Key | None:
    """A sortable key of a numbered release, in semantic-version order; None for a name
    that is not a version."""
    name = release.rsplit("@", 1)[-1].strip()  # "shop@1.2.0": Sentry's package@version
    described = DESCRIBED.search(name)
    after = int(described["after"]) if described else 0  # the tag itself is 0 after it
    found = VERSION.match(name[: described.start()] if described else name)
    if found is None:
        return None
    nums = [int(n) for n in found["nums"].split(".")]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()  # 1.2 == 1.2.0
    # "1.2.0rc1" (PEP 440) reads as "1.2.0-rc1".
    label = found["semver"] or f"{found['pre'] or ''}{found['n'] or ''}"
    words = WORD.findall(label.lower())
    if label and not words:
        return None  # "1.2.0--": a dash and nothing to order it by
    return (tuple(nums), pre_release_key(words), after)


def pre_release_key(words: list[str]) -> Key:
    """Semver's rules over a pre-release's words: numbers by value and before words, words
    in ASCII order, more words later; a release (no words) after its pre-releases."""
    if not words:
        return (1,)
    words[0] = PRE_WORDS.get(words[0], words[0])
    return (0, *((0, int(w), "") if w.isdigit() else (1, 0, w) for w in words))


def deployed_index(commits: list[str], release: str) -> int | None:
    """Where `release` (a commit, whole or its first 7+ characters) is in the deploy order."""
    for i, commit in enumerate(commits):
        if release == commit or (len(release) >= 7 and commit.startswith(release)):
            return i
    return None


def deployed_commits(project: Project) -> list[str]:
    if project.service_id is None:
        return []
    from onwatch.deploys import services as deploys

    return deploys.deployed_commits(project.service_id)


def first_live(project: Project) -> dict[str, datetime | None]:
    """When each commit of the linked service's deploy order first went live, in order."""
    if project.service_id is None:
        return {}
    from onwatch.deploys import services as deploys

    return deploys.first_live(project.service_id)


def live_by(lives: dict[str, datetime | None], release: str, moment: datetime | None) -> bool:
    """Whether `release` is a commit onwatch had made live by `moment` (`lives`: as
    first_live gives): a release already out then, so not one made after it."""
    if moment is None:
        return False
    at = deployed_index(list(lives), release)
    went = list(lives.values())[at] if at is not None else None
    return went is not None and went <= moment


def at_or_after(
    project: Project, release: str, than: str, commits: list[str] | None = None
) -> bool:
    """Whether `release` is `than` or a later release of the project (`commits`: the
    deploy order, when the caller has it already)."""
    known = known_at_or_after(project, release, than, commits)
    if known is not None:
        return known
    first = first_seen_order(project, [release, than])
    return first[release] >= first[than]


def known_at_or_after(
    project: Project, release: str, than: str, commits: list[str] | None = None
) -> bool | None:
    """As at_or_after, by the deploy order or version numbers only; None when neither
    orders the two (only the order they were first seen in would)."""
    if release == than:
        return True
    found = known_order(project, release, than, commits)
    return None if found is None else found >= 0


def known_newer(project: Project, release: str, than: str) -> bool | None:
    """Whether `release` is a later release than `than`: deployed after it, or a higher
    version (not the same one spelt otherwise: "1.4.2+43" is 1.4.2); None when unknown."""
    if release == than:
        return False
    found = known_order(project, release, than)
    return None if found is None else found > 0


def known_order(
    project: Project, release: str, than: str, commits: list[str] | None = None
) -> int | None:
    """-1, 0 or 1 as `release` comes before, with or after `than` by the deploy order or
    version numbers; None when neither orders them."""
    commits = deployed_commits(project) if commits is None else commits
    a, b = deployed_index(commits, release), deployed_index(commits, than)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    va, vb = version_key(release), version_key(than)
    if va is None or vb is None:
        return None
    return (va > vb) - (va < vb)


def first_seen_order(project: Project, names: list[str]) -> dict[str, int]:
    """Each name's place in the order the project's events first named them; a name not
    seen yet comes last (it is being seen now)."""
    seen = {
        name: i
        for i, name in enumerate(
            Release.objects.filter(project=project, name__in=names).values_list("name", flat=True)
        )
    }
    return {n: seen.get(n, len(names)) for n in names}


def newest(project: Project) -> str:
    """The newest release the project's events named; "" when none did."""
    return newest_of(
        project, list(Release.objects.filter(project=project).values_list("name", flat=True))
    )


def newest_of(project: Project, names: list[str]) -> str:
    """The newest of these releases of the project; "" when there are none."""
    commits, best = deployed_commits(project), ""
    for name in names:
        if not best or at_or_after(project, name, best, commits):
            best = name
    return best
