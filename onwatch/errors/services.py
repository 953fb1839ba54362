"""The only code that writes the errors app's objects: projects (with their audit
entries) and what SDKs send (events, issues, tallies; not audited: they are data, not
changes anyone made)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Model, Sum

from onwatch.core.audit import Actor
from onwatch.core.models import Organization
from onwatch.core.rest import MAX_ID
from onwatch.errors import grouping, keys, protocol, scrub
from onwatch.errors.models import Attachment, Event, IpMode, Issue, Project, Tally, new_key

if TYPE_CHECKING:
    from onwatch.errors.intake import Incoming, Tallies
    from onwatch.errors.protocol import Item


class Refusal(Exception):
    """A change refused, in words for the person who asked for it."""


class Refused(Exception):
    """What an SDK sent that cannot be stored: the answer's status and the reason."""

    def __init__(self, status: int, message: str, reason: str = "", retry_after: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


REASONS = {
    "rate_limited": "sent faster than the rate limit",
    "over_quota": "over the hourly quota",
    "disk_full": "the server's disk is nearly full",
    "queue_full": "the server is busy writing",
    "no_event": "attachments came before their event",
}


def dsn(project: Project) -> str:
    """What the app's SDK is given: onwatch's address with the project's key and id."""
    site = urlsplit(settings.SITE_ROOT)
    return protocol.dsn(site.scheme, site.netloc, project.public_key, project.pk)


def add_project(org: Organization, name: str, actor: Actor) -> Project:
    name = name.strip()
    if not name or len(name) > 100:
        raise Refusal("Give the project a name of 1 to 100 characters")
    try:
        with transaction.atomic():
            project = Project.objects.create(org=org, name=name)
            actor.record("errors-project-added", org, name, id=project.pk)
    except IntegrityError:
        raise Refusal(f"Another project is already called {name!r}") from None
    keys.forget(project.pk)  # an id once unknown (or a deleted project's) is looked up again
    return project


def rotate_key(project: Project, actor: Actor) -> None:
    """A new key (and so a new DSN); the old one stops working at once."""
    with transaction.atomic():
        project.public_key = new_key()
        project.key_revoked = False
        project.save(update_fields=["public_key", "key_revoked"])
        actor.record("errors-key-rotated", project.org, project.name, id=project.pk)
    keys.forget(project.pk)  # the old key is refused at once, before its body is read


def revoke_key(project: Project, actor: Actor) -> None:
    with transaction.atomic():
        project.key_revoked = True
        project.save(update_fields=["key_revoked"])
        actor.record("errors-key-revoked", project.org, project.name, id=project.pk)
    keys.forget(project.pk)


def change_project(project: Project, ip_mode: str, hourly_quota: int, actor: Actor) -> None:
    if ip_mode not in IpMode.values:
        raise Refusal(f"Choose how IP addresses are kept: {', '.join(IpMode.values)}")
    if hourly_quota < 1:
        raise Refusal("The hourly quota must be at least 1 event")
    with transaction.atomic():
        project.ip_mode, project.hourly_quota = ip_mode, hourly_quota
        project.save(update_fields=["ip_mode", "hourly_quota"])
        actor.record(
            "errors-project-changed",
            project.org,
            project.name,
            id=project.pk,
            ip_mode=ip_mode,
            hourly_quota=hourly_quota,
        )


def hour_of(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def add_tallies(project: Project, hour: datetime, tallies: Tallies) -> None:
    for (what, detail), count in tallies.items():
        if count <= 0:
            continue
        found = Tally.objects.filter(project=project, hour=hour, what=what, detail=detail)
        if found.update(count=F("count") + count):
            continue
        row = Tally(project=project, hour=hour, what=what, detail=detail, count=count)
        if not inserted(row):  # another sender's, made meanwhile
            found.update(count=F("count") + count)


def inserted(row: Model) -> bool:
    """Whether `row` was inserted; False when another transaction inserted the same first:
    the unique constraint decides (on PostgreSQL our insert waits for the other to commit,
    then fails), in a savepoint so ours goes on and counts it as an update."""
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def take(incoming: Incoming, now: datetime) -> None:
    """Store what an SDK sent, or raise Refused (counted) without storing any of it."""
    # An id past the database's integers is no project (and must not reach the query).
    fits = incoming.project_id <= MAX_ID
    project = Project.objects.filter(pk=incoming.project_id).first() if fits else None
    if project is None or project.public_key != incoming.key:
        raise Refused(403, "unknown project or key: check the DSN")
    if project.key_revoked:
        raise Refused(403, "this project's key was revoked: use its new DSN")
    hour = hour_of(now)
    if incoming.refused:
        refuse(
            project,
            hour,
            incoming,
            incoming.refused,
            1 if incoming.refused == "rate_limited" else 60,
        )
    if incoming.events and stored_this_hour(project, hour) >= project.hourly_quota:
        left = int((hour + timedelta(hours=1) - now).total_seconds()) + 1
        refuse(project, hour, incoming, "over_quota", left)
    earlier = events_of_attachments(project, incoming, hour)
    for event in incoming.events:
        stored_once(project, event, incoming, now)
    for target, item in incoming.attachments:
        if target in earlier:
            attach(earlier[target], item)
    add_tallies(project, hour, incoming.tallies)
    if incoming.events:
        add_tallies(project, hour, _one("stored", "", len(incoming.events)))


def refuse(project: Project, hour: datetime, incoming: Incoming, reason: str, retry: int) -> None:
    # Counted in this transaction, which commits: the refusal is the answer, not a failure.
    add_tallies(project, hour, _one("refused", reason, max(1, len(incoming.events))))
    raise Refused(429, f"refused: {REASONS[reason]}; send again later", reason, retry)


def _one(what: str, detail: str, count: int) -> Tallies:
    from collections import Counter

    return Counter({(what, detail): count})


def stored_this_hour(project: Project, hour: datetime) -> int:
    found = Tally.objects.filter(project=project, hour=hour, what="stored").first()
    return found.count if found is not None else 0


def stored_once(project: Project, event: dict[str, Any], incoming: Incoming, now: datetime) -> None:
    try:
        with transaction.atomic():  # a savepoint: a twin undoes this event's rows only
            store_event(project, event, incoming, now)
    except IntegrityError:
        # The same event sent twice at once (an SDK's retry): the other sender stored it
        # and counted it in its issue.
        if not Event.objects.filter(project=project, event_id=str(event["event_id"])).exists():
            raise


def store_event(project: Project, event: dict[str, Any], incoming: Incoming, now: datetime) -> None:
    event_id = str(event["event_id"])
    if Event.objects.filter(project=project, event_id=event_id).exists():
        return  # sent again (a retry): it is stored already
    scrub.addresses(event, incoming.remote_addr, keep=project.ip_mode == IpMode.KEEP)
    issue = issue_for(project, event, now)
    found = event.get("user")
    user: dict[str, Any] = found if isinstance(found, dict) else {}
    who = {k: str(user.get(k) or "")[:255] for k in ("id", "email", "ip_address")}
    user_key = who["id"] or who["email"] or who["ip_address"]
    if user_key and not issue.events.filter(user_key=user_key).exists():
        Issue.objects.filter(pk=issue.pk).update(users_affected=F("users_affected") + 1)
    stored = Event.objects.create(
        project=project,
        issue=issue,
        event_id=event_id,
        received_at=now,
        level=str(event.get("level") or "error")[:20],
        release=str(event.get("release") or "")[:200],
        environment=str(event.get("environment") or "")[:64],
        user_key=user_key,
        user_id=who["id"],
        user_email=who["email"],
        user_ip=who["ip_address"][:45],
        data=event,
    )
    for target, item in incoming.attachments:
        if target == event_id:
            attach(stored, item)


def events_of_attachments(project: Project, incoming: Incoming, hour: datetime) -> dict[str, Event]:
    """The events stored before that the attachments sent without them belong to; Refused
    (and counted) when one of them is not stored: an attachment is never taken and lost."""
    sent_with = {str(event["event_id"]) for event in incoming.events}
    wanted = {target for target, _ in incoming.attachments} - sent_with
    if not wanted:
        return {}
    found = {e.event_id: e for e in Event.objects.filter(project=project, event_id__in=wanted)}
    missing = sum(1 for target, _ in incoming.attachments if target in wanted - found.keys())
    if missing:
        add_tallies(project, hour, _one("refused", "no_event", missing))
        raise Refused(400, f"refused: {REASONS['no_event']}; send them with their event")
    return found


def attach(event: Event, item: Item) -> None:
    Attachment.objects.create(
        event=event,
        filename=str(item.headers.get("filename") or "attachment")[:255],
        content_type=str(item.headers.get("content_type") or "")[:100],
        content=item.payload,
    )


def issue_for(project: Project, event: dict[str, Any], now: datetime) -> Issue:
    found = grouping.grouping(event)
    release = str(event.get("release") or "")[:200]
    issue = Issue.objects.filter(
        project=project, grouping_version=grouping.VERSION, grouping_hash=found.hash
    ).first()
    if issue is None:
        made = Issue(
            project=project,
            grouping_hash=found.hash,
            grouping_version=grouping.VERSION,
            grouped_by=found.by,
            title=found.title,
            culprit=found.culprit,
            first_seen=now,
            last_seen=now,
            first_release=release,
            last_release=release,
            event_count=1,
        )
        if inserted(made):
            return made
        # Made by another sender meanwhile: this event is one more of it.
        issue = Issue.objects.get(
            project=project, grouping_version=grouping.VERSION, grouping_hash=found.hash
        )
    Issue.objects.filter(pk=issue.pk).update(
        last_seen=now, last_release=release, event_count=F("event_count") + 1
    )
    return issue


def refused_last_hour(project: Project, now: datetime) -> list[tuple[str, int]]:
    """(reason in words, events) refused in the last hour and the one before it began."""
    rows = (
        Tally.objects.filter(
            project=project, what="refused", hour__gte=hour_of(now) - timedelta(hours=1)
        )
        .values("detail")
        .annotate(total=Sum("count"))
        .order_by("-total")
    )
    return [(REASONS.get(r["detail"], r["detail"]), int(r["total"])) for r in rows]
