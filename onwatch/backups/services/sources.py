"""Sources: what gets backed up, added, changed and removed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from django.db import transaction

from onwatch.backups.models import Source, SourceKind
from onwatch.backups.services import Refused, name_problem, private_path_problem
from onwatch.backups.services.actors import SYSTEM, Actor
from onwatch.backups.services.repositories import InUse
from onwatch.core.models import Organization


class SourceFields(TypedDict, total=False):
    """A source's stored fields; which ones a kind uses is the kind's business."""

    name: str
    host: str
    port: int | None
    database: str
    username: str
    password: str
    path: str
    provider: str
    scratch_url: str
    smoke_queries: list[dict[str, Any]]


def source_problem(org: Organization, source: Source | None, fields: SourceFields) -> str | None:
    """What the rules refuse in a new or changed source, in words; None when fine."""
    if "name" in fields:
        taken = name_problem(Source, org, fields["name"], source)
        if taken:
            return taken
    if fields.get("path"):
        return private_path_problem(fields["path"])
    return None


def add_source(
    org: Organization,
    name: str,
    kind: str,
    *,
    actor: Actor = SYSTEM,
    known_problems: Sequence[str] = (),
    **fields: Any,
) -> Source:
    """`fields` as in SourceFields. `known_problems` are what the source's checks found
    and the person saved anyway: the audit entry counts them. Raises Refused."""
    if kind not in SourceKind.values:
        raise Refused(f"{kind!r} is not a kind of source onwatch backs up")
    problem = source_problem(
        org, None, SourceFields(name=name.strip(), path=fields.get("path", ""))
    )
    if problem:
        raise Refused(problem)
    with transaction.atomic():
        source = Source.objects.create(org=org, name=name.strip(), kind=kind, **fields)
        actor.record(
            "backup-source-added",
            org,
            source.name,
            id=source.pk,
            kind=kind,
            changed=["name", *fields],
            problems=len(known_problems),
        )
    return source


def change_source(
    source: Source, fields: SourceFields, actor: Actor, known_problems: Sequence[str] = ()
) -> list[str]:
    """Store the fields given (a secret left out keeps the stored one); the names of what
    changed. Raises Refused."""
    problem = source_problem(source.org, source, fields)
    if problem:
        raise Refused(problem)
    given: dict[str, Any] = dict(fields)
    changed = [n for n, v in given.items() if getattr(source, n) != v]
    for name in changed:
        setattr(source, name, given[name])
    with transaction.atomic():
        if changed:
            source.save(update_fields=changed)
        actor.record(
            "backup-source-changed",
            source.org,
            source.name,
            id=source.pk,
            kind=source.kind,
            changed=changed,
            problems=len(known_problems),
        )
    return changed


def remove_source(source: Source, actor: Actor) -> None:
    """Out of onwatch; nothing on its server is touched. Raises InUse while a plan backs
    it up."""
    users = [p.name for p in source.plans.all()]
    if users:
        raise InUse(f"{source.name} is backed up by {', '.join(users)}; remove those plans first.")
    pk, name = source.pk, source.name
    with transaction.atomic():
        source.delete()
        actor.record("backup-source-removed", source.org, name, id=pk)
