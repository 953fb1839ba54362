"""The only code that writes the errors app's objects: projects and what people do with
issues (resolve, ignore, merge, split; each with its audit entry), and what SDKs send
(events, issues, tallies, and what each event does to its issue's state and alerts; not
audited: they are data, not changes anyone made)."""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import Count, F, Field, Max, Min, Model, Q, Sum

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.models import Organization
from onwatch.core.validators import MAX_ID
from onwatch.errors import alerting, grouping, keys, order, protocol, scrub, states
from onwatch.errors.models import (
    Attachment,
    Event,
    IpMode,
    Issue,
    IssueState,
    Project,
    Queued,
    Release,
    SpoolCursor,
    Tally,
    new_key,
)

if TYPE_CHECKING:
    from onwatch.errors.intake import Incoming, Tallies, Waiting
    from onwatch.errors.protocol import Item
    from onwatch.errors.spooled import Entry


class Refusal(Exception):
    """A change refused, in words for the person who asked for it."""


class Refused(Exception):
    """What an SDK sent that cannot be stored: the answer's status and the reason."""

    def __init__(self, status: int, message: str, reason: str = "", retry_after: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


log = logging.getLogger(__name__)
DIGEST_KIND = "errors.digest"

REASONS = {
    "rate_limited": "sent faster than the rate limit",
    "over_quota": "over the hourly quota",
    "disk_full": "the server's disk is nearly full",
    "queue_full": "the server is busy writing",
    "no_event": "attachments came before their event",
    # Answered 200 (their envelope's framing read), then found malformed by the digest.
    "unreadable": "accepted, then could not be read (not valid JSON or not an event)",
}
RETRY = {"rate_limited": 1, "queue_full": 5}  # seconds; others: 60


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
    refused = take_all([incoming], now)[0]
    if refused is not None:
        raise refused


def take_all(incomings: list[Incoming], now: datetime) -> list[Refused | None]:
    """Store what SDKs sent (a batch of the writer, in its transaction): for each, None
    when it is stored, or why it was refused (counted) without storing any of it."""
    found: list[Refused | None] = [None] * len(incomings)
    by_project: dict[int, list[int]] = {}
    for i, incoming in enumerate(incomings):
        by_project.setdefault(incoming.project_id, []).append(i)
    # Projects locked in one order: two batches cannot each hold a project the other waits for.
    for project_id in sorted(by_project):
        places = by_project[project_id]
        answers = take_project(project_id, [incomings[i] for i in places], now)
        for i, answer in zip(places, answers, strict=True):
            found[i] = answer
    return found


def locked_project(project_id: int) -> Project | None:
    # An id past the database's integers is no project (and must not reach the query).
    if project_id > MAX_ID:
        return None
    # Locked first, for the rest of the writer's transaction: every sender's writes to the
    # project's rows (its issues, then the hourly tallies every event adds to) then come
    # one after the other in the same order. Taken in the order each sender met them, two
    # web processes' batches locked an issue and the tally in opposite orders and one was
    # aborted as a deadlock (a 503 for its events) on PostgreSQL.
    return Project.objects.select_for_update(no_key=True).filter(pk=project_id).first()


def take_project(project_id: int, incomings: list[Incoming], now: datetime) -> list[Refused | None]:
    project = locked_project(project_id)
    hour = hour_of(now)
    tallies: Tallies = Counter()
    stored = stored_this_hour(project, hour) if project is not None else 0
    answers: list[Refused | None] = []
    fast: list[Incoming] = []
    for incoming in incomings:
        refused = admitted(project, incoming, now, stored, tallies)
        answers.append(refused)
        if refused is None and project is not None:
            stored += len(incoming.events)
            fast.append(incoming)
    if project is not None:
        store_events(project, [i for i in fast if not i.attachments], now)
        for n, incoming in enumerate(incomings):
            if answers[n] is None and incoming.attachments:
                answers[n] = with_attachments(project, incoming, now, tallies)
        add_tallies(project, hour, tallies)
    return answers


def admitted(
    project: Project | None, incoming: Incoming, now: datetime, stored: int, tallies: Tallies
) -> Refused | None:
    """Why the request cannot be stored (its refusal counted in `tallies`), or None;
    `stored`: the project's events stored this hour, with the batch's so far."""
    events = len(incoming.events)
    refused = admission(project, incoming.key, incoming.refused, events, now, stored, tallies)
    if refused is None:
        tallies.update(incoming.tallies)
    return refused


def admission(
    project: Project | None,
    key: str,
    why: str,
    events: int,
    now: datetime,
    stored: int,
    tallies: Tallies,
) -> Refused | None:
    """Why a request with this key and number of events cannot be taken (counted in
    `tallies`; `why`: a reason found before), or None, its events counted as stored."""
    if project is None or project.public_key != key:
        return Refused(403, "unknown project or key: check the DSN")
    if project.key_revoked:
        return Refused(403, "this project's key was revoked: use its new DSN")
    if why:
        return refuse(events, why, RETRY.get(why, 60), tallies)
    if events and stored >= project.hourly_quota:
        left = int((hour_of(now) + timedelta(hours=1) - now).total_seconds()) + 1
        return refuse(events, "over_quota", left, tallies)
    if events:
        tallies["stored", ""] += events
    return None


def queue_all(waiting: list[Waiting], now: datetime) -> list[Refused | None]:
    """Queue envelopes in the database for the digest (a batch of the writer, in its
    transaction), from a web process that does not digest (ONWATCH_INGEST_DIGEST=0: on
    PostgreSQL, a machine that only takes events, whose spool nobody would read), counted
    against their project's quota as if stored: None for each queued, or why it was
    refused (counted) without queueing it."""
    found: list[Refused | None] = [None] * len(waiting)
    if not waiting:
        return found
    room = settings.ERRORS_QUEUE_MAX - Queued.objects.count()
    by_project: dict[int, list[int]] = {}
    for i, w in enumerate(waiting):
        by_project.setdefault(w.project_id, []).append(i)
    rows: list[Queued] = []
    for project_id in sorted(by_project):  # locked in one order, as take_all does
        project = locked_project(project_id)
        hour, tallies = hour_of(now), Counter[tuple[str, str]]()
        stored = stored_this_hour(project, hour) if project is not None else 0
        for i in by_project[project_id]:
            w = waiting[i]
            why = w.refused or ("" if room > 0 else "queue_full")
            found[i] = admission(project, w.key, why, w.events, now, stored, tallies)
            if found[i] is None and project is not None:
                stored += w.events
                room -= 1
                rows.append(queued_row(project, w, now))
        if project is not None:
            add_tallies(project, hour, tallies)
    Queued.objects.bulk_create(rows)
    return found


def queued_row(project: Project, w: Waiting, now: datetime) -> Queued:
    # base64: the keyring seals text.
    body = base64.b64encode(w.body).decode()
    return Queued(
        project=project,
        received_at=now,
        encoding=w.encoding[:20],
        remote_addr=w.remote_addr[:45],
        events=w.events,
        body=body,
    )


def digest_spooled(
    name: str, start: int, end: int, read: list[tuple[Entry, Incoming | None]]
) -> int:
    """Store what was read of a spool file from `start` to `end` (None: an envelope that
    could not be read, counted as refused) and move the file's cursor to `end`, in one
    transaction: a crash before its commit leaves the cursor where it was and nothing
    stored, after it all stored and the cursor past it. 0 when the cursor is not at
    `start` (another digest took these meanwhile), else how many records."""
    with transaction.atomic():
        SpoolCursor.objects.get_or_create(name=name)
        cursor = SpoolCursor.objects.select_for_update().get(name=name)
        if cursor.offset != start:
            return 0
        by_project: dict[int, list[tuple[Entry, Incoming | None]]] = {}
        for entry, incoming in read:
            by_project.setdefault(entry.project_id, []).append((entry, incoming))
        for project_id in sorted(by_project):  # locked in one order, as take_all does
            project = locked_project(project_id)
            if project is not None:  # else deleted since
                digest_entries(project, by_project[project_id])
        SpoolCursor.objects.filter(pk=cursor.pk).update(offset=end)
    return len(read)


def digest_entries(project: Project, read: list[tuple[Entry, Incoming | None]]) -> None:
    """Events stored and counted in the hour each was answered (the quota counts them
    there); refusals counted."""
    by_hour: dict[datetime, list[tuple[Entry, Incoming | None]]] = {}
    for entry, incoming in read:
        by_hour.setdefault(hour_of(entry.received_at), []).append((entry, incoming))
    for hour, entries in by_hour.items():
        tallies: Tallies = Counter()
        taken = []
        for entry, incoming in entries:
            if entry.refused:
                tallies["refused", entry.refused] += max(1, entry.events)
            elif incoming is None:
                tallies["refused", "unreadable"] += max(1, entry.events)
            else:
                taken.append(incoming)
                tallies.update(incoming.tallies)
                tallies["stored", ""] += entry.events
        # The time each was answered would be truer; the batch's last keeps it one batch.
        store_events(project, taken, max(e.received_at for e, _ in entries))
        add_tallies(project, hour, tallies)


def forget_spool_file(name: str) -> None:
    """The cursor of a spool file removed, read to its end."""
    SpoolCursor.objects.filter(name=name).delete()


def digest(read: list[tuple[Queued, Incoming | None]]) -> int:
    """Store the events of queued envelopes read since (None: one that could not be read,
    counted as refused), and take them off the queue, in one transaction: a crash before
    its commit leaves them all queued and nothing stored, after it none queued and all
    stored. How many this call digested (another process's digest may have taken some).
    """
    with transaction.atomic():
        ids = [row.pk for row, _ in read]
        # PostgreSQL: rows another digest is at are skipped; both: rows it took are gone.
        mine = set(
            Queued.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids)
            .values_list("pk", flat=True)
        )
        by_project: dict[int, list[tuple[Queued, Incoming | None]]] = {}
        for row, incoming in read:
            if row.pk in mine:
                by_project.setdefault(row.project_id, []).append((row, incoming))
        for project_id in sorted(by_project):
            project = locked_project(project_id)
            if project is not None:  # else deleted, and its queue with it
                digest_project(project, by_project[project_id])
        Queued.objects.filter(pk__in=mine).delete()
    return len(mine)


def digest_project(project: Project, read: list[tuple[Queued, Incoming | None]]) -> None:
    # The time each was answered would be truer; the batch's last keeps it one batch.
    when = max(row.received_at for row, _ in read)
    tallies: Tallies = Counter()
    taken = []
    for row, incoming in read:
        if incoming is None:
            # Counted as stored when it was queued: now as refused, and on the page.
            stored = Tally.objects.filter(
                project=project, hour=hour_of(row.received_at), what="stored", detail=""
            )
            stored.update(count=F("count") - row.events)
            tallies["refused", "unreadable"] += max(1, row.events)
        else:
            taken.append(incoming)
            tallies.update(incoming.tallies)
    store_events(project, taken, when)
    add_tallies(project, hour_of(when), tallies)


def with_attachments(
    project: Project, incoming: Incoming, now: datetime, tallies: Tallies
) -> Refused | None:
    """The slower way, one event at a time, for the rare request with attachments: they
    may belong to an event stored before."""
    try:
        earlier = events_of_attachments(project, incoming, hour_of(now))
    except Refused as e:
        tallies["stored", ""] -= len(incoming.events)
        tallies.subtract(incoming.tallies)
        return e
    for event in incoming.events:
        stored_once(project, event, incoming, now)
    for target, item in incoming.attachments:
        if target in earlier:
            attach(earlier[target], item)
    return None


def refuse(events: int, reason: str, retry: int, tallies: Tallies) -> Refused:
    # Counted in this transaction, which commits: the refusal is the answer, not a failure.
    tallies["refused", reason] += max(1, events)
    return Refused(429, f"refused: {REASONS[reason]}; send again later", reason, retry)


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
    release = str(event.get("release") or "")[:200]
    issue, created, merged_from = issue_for(project, event, now)
    # The issue's own last release is noted already: no query for the usual event.
    if (created or release != issue.last_release) and note_release(project, release, now):
        # The new release may have resolved it: decide on that state, with the count as
        # it was before this event (which decide and issue_changed add themselves).
        issue.refresh_from_db(fields=["state", "resolved_in", "state_changed_at"])
    issue_changed(project, issue, created, release, now)
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
        merged_from=merged_from,
    )
    for target, item in incoming.attachments:
        if target == event_id:
            attach(stored, item)


def sent_before(incoming: Incoming) -> set[str]:
    """The ids of the events the attachments belong to that were sent before them."""
    sent_with = {str(event["event_id"]) for event in incoming.events}
    return {target for target, _ in incoming.attachments} - sent_with


def not_stored(project_id: int, event_ids: set[str]) -> set[str]:
    stored = Event.objects.filter(project_id=project_id, event_id__in=event_ids)
    return event_ids - set(stored.values_list("event_id", flat=True))


def events_of_attachments(project: Project, incoming: Incoming, hour: datetime) -> dict[str, Event]:
    """The events stored before that the attachments sent without them belong to; Refused
    (and counted) when one of them is not stored: an attachment is never taken and lost."""
    wanted = sent_before(incoming)
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


def issue_for(
    project: Project, event: dict[str, Any], now: datetime
) -> tuple[Issue, bool, Issue | None]:
    """The event's issue, whether it was made now, and the merged issue its grouping
    made when that was merged into another (its events go to the one kept)."""
    found = grouping.grouping(event)
    release = str(event.get("release") or "")[:200]
    issue = grouped_issue(project, found)
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
            return made, True, None
        # Made by another sender meanwhile: this event is one more of it.
        issue = Issue.objects.get(
            project=project, grouping_version=grouping.VERSION, grouping_hash=found.hash
        )
    kept, merged_from = counted_in(issue, release, now)
    return kept, False, merged_from


def grouped_issue(project: Project, found: grouping.Grouping) -> Issue | None:
    """The issue the previous rules made of this event, else the one these rules made (in
    one query). The earlier one first: when the new rules join what the old kept apart (a
    browser's frames on two host names), each old issue still gets all its events rather
    than lose them to a new issue made by the first event of another host."""
    rows = Issue.objects.filter(lookups(project, {found.hash}, {found.earlier}))
    by_key = {(i.grouping_version, i.grouping_hash): i for i in rows}
    return next((by_key[k] for k in candidates(found) if k in by_key), None)


def lookups(project: Project, hashes: set[str], earlier: set[str]) -> Q:
    """The issues that may hold events of these groupings (see `candidates`)."""
    # The project in each branch: each is then one lookup of the unique index (with it
    # outside, SQLite reads every issue of the project).
    previous = grouping.VERSION - 1
    return (
        Q(project=project, grouping_version=previous, grouping_hash__in=earlier - {""})
        | Q(project=project, grouping_version=previous, grouping_hash__in=hashes)
        | Q(project=project, grouping_version=grouping.VERSION, grouping_hash__in=hashes)
    )


def candidates(found: grouping.Grouping) -> list[tuple[int, str]]:
    """(version, hash) of the issue an event joins, first found first: the previous rules'
    issue; then one stored as the previous version with today's hash (the release before
    this one already grouped made-up stacks and browser URLs as version 2 does, but stored
    them as version 1: those issues keep their events); then these rules' issue."""
    previous = grouping.VERSION - 1
    return [(previous, found.earlier), (previous, found.hash), (grouping.VERSION, found.hash)]


# A merge or a split changing the same issues again each time this event looks: it gives
# up (the sender gets an error and sends again) rather than loop.
COUNT_TRIES = 10


def counted_in(own: Issue, release: str, now: datetime) -> tuple[Issue, Issue | None]:
    """Count an event of `own`'s grouping in the issue it belongs to now: `own`, or the
    issue it was merged into (then also returned as the one the event came from).

    The row counted stays locked until the event is stored, and a merge or a split locks
    the issues it changes before it moves events, so each waits for the other and sees its
    events: a merge committed meanwhile leaves no row to count (`merged_into` is set), a
    split committed meanwhile is seen when `own` is read again."""
    for _ in range(COUNT_TRIES):
        if own.merged_into_id is None:
            if _count(own.pk, release, now):
                return own, None
        else:
            kept = _locked(kept_issue(own).pk)
            own.refresh_from_db(fields=["merged_into"])  # read after the lock: split since?
            if kept is not None and kept_issue(own).pk == kept.pk:
                _count(kept.pk, release, now)
                return kept, own
        own.refresh_from_db()
    raise RuntimeError(f"issue {own.pk} kept being merged or split while an event came in")


def _locked(issue_id: int) -> Issue | None:
    """The issue read again once no merge or split of it is under way; None if merged."""
    return Issue.objects.select_for_update().filter(pk=issue_id, merged_into=None).first()


def _count(issue_id: int, release: str, now: datetime) -> bool:
    return bool(
        Issue.objects.filter(pk=issue_id, merged_into=None).update(
            last_seen=now, last_release=release, event_count=F("event_count") + 1
        )
    )


# --- a batch's events: one query per table, whatever the number of events ------------


@dataclass(slots=True)
class Sent:
    """An event of the batch not stored before, and where it goes."""

    event: dict[str, Any]
    incoming: Incoming
    group: grouping.Grouping
    release: str
    user_key: str = ""
    issue: Issue | None = None


@dataclass(slots=True)
class Counting:
    """An issue as its events of the batch change it, written once at the end."""

    issue: Issue
    created: bool
    unsaved: int = 0  # its events of the batch so far, not in the table yet
    changed: set[str] = field(default_factory=set)


def store_events(project: Project, incomings: list[Incoming], now: datetime) -> None:
    """The events of these requests, in the order sent: read and grouped before (in
    `intake.accept`), so here one query per table for the whole batch — which events are
    stored already, their releases, issues and users — then each event's effect on its
    issue decided in memory, and the events and issues written with one statement each.
    An event of a merged issue takes the slower way of one event at a time."""
    sent = new_events(project, incomings)
    if not sent:
        return
    known = known_releases(project, sent)
    for release in dict.fromkeys(s.release for s in sent if s.release):
        if release not in known:
            note_release(project, release, now)
    issues = issues_of(project, sent, now)
    slow = [s for s in sent if issues[s.group].issue.merged_into_id is not None]
    fast = [s for s in sent if issues[s.group].issue.merged_into_id is None]
    # One Counting per issue, though several groupings may lead to it (version 1's).
    countings = list({id(c): c for c in issues.values()}.values())
    seen = users_seen([c.issue for c in countings], fast)
    for s in fast:
        count_event(project, issues[s.group], s, seen, now)
    Event.objects.bulk_create([event_row(project, s, now) for s in fast])
    counted = [c for c in countings if c.changed]
    if counted:
        write_issues([c.issue for c in counted], set().union(*(c.changed for c in counted)))
    for s in slow:
        stored_once(project, s.event, s.incoming, now)


def new_events(project: Project, incomings: list[Incoming]) -> list[Sent]:
    """The requests' events that are not stored yet (an SDK's retry is), scrubbed of
    what the project does not keep, each once."""
    ids = {str(e["event_id"]) for i in incomings for e in i.events}
    stored = Event.objects.filter(project=project, event_id__in=ids).order_by()
    known = set(stored.values_list("event_id", flat=True))
    sent = []
    for incoming in incomings:
        groups = incoming.groups or [grouping.grouping(e) for e in incoming.events]
        for event, group in zip(incoming.events, groups, strict=True):
            if str(event["event_id"]) in known:
                continue
            known.add(str(event["event_id"]))
            scrub.addresses(event, incoming.remote_addr, keep=project.ip_mode == IpMode.KEEP)
            release = str(event.get("release") or "")[:200]
            sent.append(Sent(event, incoming, group, release))
    return sent


def known_releases(project: Project, sent: list[Sent]) -> set[str]:
    names = {s.release for s in sent if s.release}
    found = Release.objects.filter(project=project, name__in=names).order_by()
    return set(found.values_list("name", flat=True))


def issues_of(
    project: Project, sent: list[Sent], now: datetime
) -> dict[grouping.Grouping, Counting]:
    """The issue of each grouping in the batch, read locked (in one order, as merges lock
    them) or made now from its first event. As `grouped_issue` decides for one event: the
    issue the previous rules made first, else the one these rules made."""
    mine = {s.group.hash for s in sent}
    earlier = {s.group.earlier for s in sent}
    found = Issue.objects.select_for_update().filter(lookups(project, mine, earlier))
    by_version = {
        (i.grouping_version, i.grouping_hash): Counting(i, False) for i in found.order_by("pk")
    }
    issues: dict[grouping.Grouping, Counting] = {}
    for s in sent:
        if s.group in issues:
            continue
        keys = candidates(s.group)
        counting = next((by_version[k] for k in keys if k in by_version), None)
        if counting is None:
            counting = by_version[grouping.VERSION, s.group.hash] = made_issue(project, s, now)
        issues[s.group] = counting
    return issues


def made_issue(project: Project, s: Sent, now: datetime) -> Counting:
    made = Issue(
        project=project,
        grouping_hash=s.group.hash,
        grouping_version=grouping.VERSION,
        grouped_by=s.group.by,
        title=s.group.title,
        culprit=s.group.culprit,
        first_seen=now,
        last_seen=now,
        first_release=s.release,
        last_release=s.release,
        event_count=1,
    )
    if inserted(made):
        return Counting(made, True)
    # Made by another sender meanwhile (the Django view's, which locks the project too,
    # made it before this batch began: this is the unique constraint's last word).
    return Counting(
        Issue.objects.select_for_update().get(
            project=project, grouping_version=grouping.VERSION, grouping_hash=s.group.hash
        ),
        False,
    )


def users_seen(issues: list[Issue], sent: list[Sent]) -> set[tuple[int, str]]:
    """(issue, user) of the events stored before, for the users each event adds."""
    for s in sent:
        found = s.event.get("user")
        user: dict[str, Any] = found if isinstance(found, dict) else {}
        s.user_key = next((str(user.get(k) or "")[:255] for k in USER_KEYS if user.get(k)), "")
    keys = {s.user_key for s in sent if s.user_key}
    if not keys:
        return set()
    # No ordering: with the model's (by time) DISTINCT would be per event, not per user.
    rows = Event.objects.filter(issue__in=[i.pk for i in issues], user_key__in=keys).order_by()
    return set(rows.values_list("issue_id", "user_key").distinct())


USER_KEYS = ("id", "email", "ip_address")


def count_event(
    project: Project, counting: Counting, s: Sent, seen: set[tuple[int, str]], now: datetime
) -> None:
    """What one event does to its issue (counts, state, alerts), in memory."""
    issue, created = counting.issue, counting.created and counting.unsaved == 0
    counting.unsaved += 1
    outcome = states.decide(project, issue, created, s.release, now, hour_of(now), counting.unsaved)
    # The issue's events with this one: an issue made now counts its first already.
    count = issue.event_count if created else issue.event_count + 1
    digest = states.grouped(issue, outcome, count, now)
    fields = {"event_count": count, "last_seen": now, "last_release": s.release, **outcome.fields}
    if s.user_key and (issue.pk, s.user_key) not in seen:
        seen.add((issue.pk, s.user_key))
        fields["users_affected"] = issue.users_affected + 1
    for name, value in fields.items():
        setattr(issue, name, value)
    counting.changed.update(fields)
    s.issue = issue
    if outcome.alert:
        alerting.send(outcome.alert, issue, project, s.release)
    if digest:
        digest_later(issue, project)


def digest_later(issue: Issue, project: Project) -> None:
    """The crash loop's digest, sent once its minutes have passed."""
    jobs.enqueue(
        DIGEST_KIND,
        {"issue": issue.pk, "minutes": states.DIGEST_MINUTES},
        org=project.org,
        delay=states.DIGEST_MINUTES * 60,
    )


def write_issues(issues: list[Issue], names: set[str]) -> None:
    """One UPDATE for the batch's issues (their rows are locked, so the values in memory
    are the ones to write): a field with one value for all as it is, each other one by
    issue (CASE). Not bulk_update: building its CASE expressions cost more than all the
    rest of the batch's statements (measured: 37 ms of a batch of 8 events)."""
    meta, db = Issue._meta, connections[Issue.objects.db]
    quote = db.ops.quote_name
    pk = quote("id")
    sets, params = [], []
    for name in sorted(names):
        found = meta.get_field(name)
        assert isinstance(found, Field)
        values = [found.get_db_prep_save(getattr(i, found.attname), db) for i in issues]
        if all(v == values[0] for v in values):
            sets.append(f"{quote(str(found.column))} = %s")
            params.append(values[0])
            continue
        case = "CASE " + pk + " WHEN %s THEN %s" * len(issues) + " END"
        if db.features.requires_casted_case_in_updates:  # PostgreSQL: typed, not text
            case = f"CAST({case} AS {found.cast_db_type(db)})"
        sets.append(f"{quote(str(found.column))} = {case}")
        params += [x for i, v in zip(issues, values, strict=True) for x in (i.pk, v)]
    marks = ", ".join(["%s"] * len(issues))
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {pk} IN ({marks})"  # noqa: S608  (names from the model)
    with db.cursor() as cursor:
        cursor.execute(sql, [*params, *(i.pk for i in issues)])


def event_row(project: Project, s: Sent, now: datetime) -> Event:
    found = s.event.get("user")
    user: dict[str, Any] = found if isinstance(found, dict) else {}
    who = {k: str(user.get(k) or "")[:255] for k in USER_KEYS}
    return Event(
        project=project,
        issue=s.issue,
        event_id=str(s.event["event_id"]),
        received_at=now,
        level=str(s.event.get("level") or "error")[:20],
        release=s.release,
        environment=str(s.event.get("environment") or "")[:64],
        user_key=s.user_key,
        user_id=who["id"],
        user_email=who["email"],
        user_ip=who["ip_address"][:45],
        data=s.event,
    )


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


# --- issue states, regressions and alerts: what each event does to its issue -------------


def note_release(project: Project, release: str, now: datetime) -> int:
    """Remember when the project's events first named `release`; a release newer than the
    one an issue was "resolved in the next release" after resolves it in that release.
    Returns how many issues that resolved."""
    if not release or Release.objects.filter(project=project, name=release).exists():
        return 0
    if not inserted(Release(project=project, name=release, first_seen=now)):
        return 0  # another sender's event named it first, at the same moment: it decided
    resolved = 0
    lives: dict[str, datetime | None] | None = None
    for issue in Issue.objects.filter(project=project, state=IssueState.RESOLVED_NEXT):
        after = issue.resolved_after
        lives = order.first_live(project) if lives is None else lives
        if order.live_by(lives, release, issue.state_changed_at):
            continue  # out already when the issue was marked: not the next release
        # Only a release known to be newer (deployed later, or a higher version): a name
        # seen for the first time may be an old client's (a commit onwatch never deployed).
        # The same version spelt otherwise ("1.4.2+43" after "1.4.2+42") is not newer.
        if not after or order.known_newer(project, release, after) is True:
            resolved += Issue.objects.filter(pk=issue.pk).update(
                state=IssueState.RESOLVED, resolved_in=release, state_changed_at=now
            )
    return resolved


def kept_issue(issue: Issue) -> Issue:
    """The issue a merged one went into, following merges of merges."""
    seen = {issue.pk}
    while issue.merged_into_id is not None and issue.merged_into_id not in seen:
        seen.add(issue.merged_into_id)
        issue = Issue.objects.get(pk=issue.merged_into_id)
    return issue


def issue_changed(
    project: Project, issue: Issue, created: bool, release: str, now: datetime
) -> None:
    """Apply what the event does to its issue's state, and raise its alert if any."""
    outcome = states.decide(project, issue, created, release, now, hour_of(now))
    count = issue.event_count if created else issue.event_count + 1
    digest = states.grouped(issue, outcome, count, now)
    if outcome.fields:
        Issue.objects.filter(pk=issue.pk).update(**outcome.fields)
    if outcome.alert:
        issue.refresh_from_db()
        alerting.send(outcome.alert, issue, project, release)
    if digest:
        digest_later(issue, project)


def send_digest(issue_id: int, minutes: int, now: datetime) -> int:
    """The events of an issue since its last alert, in one message; the next digest waits
    twice as long. Returns how many events it told of (0: none came, no message)."""
    with transaction.atomic():
        issue = Issue.objects.select_for_update().filter(pk=issue_id).first()
        if issue is None or issue.digest_due is None:
            return 0
        # A merge or split since may have changed the count: never a negative number.
        more = max(0, issue.event_count - issue.alerted_count)
        if not more:
            Issue.objects.filter(pk=issue.pk).update(digest_due=None)
            return 0
        later = min(minutes * 2, states.DIGEST_MAX_MINUTES)
        Issue.objects.filter(pk=issue.pk).update(
            alerted_count=issue.event_count,
            alerted_at=now,
            digest_due=now + timedelta(minutes=later),
        )
        alerting.send("digest", issue, issue.project, issue.last_release, more)
        jobs.enqueue(
            DIGEST_KIND,
            {"issue": issue.pk, "minutes": later},
            org=issue.project.org,
            delay=later * 60,
        )
    return more


# --- what time and deploys do to issues, on the scheduler's tick (audited as the system) --


def end_ignoring(now: datetime) -> int:
    """Unresolve the issues ignored until a time now past: the list shows them again
    without waiting for their next event. Their time is kept, so that event is alerted as
    the issue being back. Returns how many; one bad row is logged and skipped."""
    due = Issue.objects.filter(state=IssueState.IGNORED, ignored_until__lte=now)
    pks = due.values_list("pk", flat=True)
    return sum(_each(pk, partial(_end_ignoring, pk, now)) for pk in pks)


def _end_ignoring(issue_id: int, now: datetime) -> int:
    with transaction.atomic():
        # The issue's row only: the project's is every event writer's to lock.
        issue = (
            Issue.objects.select_for_update(of=("self",))
            .filter(pk=issue_id, state=IssueState.IGNORED, ignored_until__lte=now)
            .select_related("project__org")
            .first()
        )
        if issue is None or issue.ignored_until is None:
            return 0  # an event or a person got there first
        Issue.objects.filter(pk=issue.pk).update(
            state=IssueState.UNRESOLVED,
            state_changed_at=issue.ignored_until,
            ignored_until_count=None,
            ignored_rate=None,
        )
        _record(SYSTEM, "errors-issue-unignored", issue, until=issue.ignored_until.isoformat())
    return 1


def resolve_deployed(now: datetime) -> int:
    """Resolve the issues "resolved in the next release" of projects linked to a service
    once onwatch deployed a release after the one they wait on: a fix that works sends no
    event to name its release. Returns how many; one bad row is logged and skipped."""
    waiting = (
        Issue.objects.filter(state=IssueState.RESOLVED_NEXT, project__service__isnull=False)
        .exclude(resolved_after="")
        .select_related("project")
    )
    lives: dict[int, dict[str, datetime | None]] = {}  # the deploy order, once per project
    resolved = 0
    for issue in waiting:
        if issue.project_id not in lives:
            lives[issue.project_id] = order.first_live(issue.project)
        fix = next_deployed(lives[issue.project_id], issue)
        if fix:
            resolved += _each(issue.pk, partial(_resolve_deployed, issue, fix, now))
    return resolved


def next_deployed(lives: dict[str, datetime | None], issue: Issue) -> str:
    """The first commit deployed after the one the issue waits on that went live after it
    was marked ("" when none did yet): one live already when someone clicked "resolved in
    the next release" is not that next release (its events would be false regressions)."""
    deployed = list(lives)
    at = order.deployed_index(deployed, issue.resolved_after)
    if at is None:
        return ""
    later = (c for c in deployed[at + 1 :] if not order.live_by(lives, c, issue.state_changed_at))
    return next(later, "")


def _resolve_deployed(issue: Issue, release: str, now: datetime) -> int:
    with transaction.atomic():
        # Still waiting on the same release (nobody changed it meanwhile): resolved in it.
        changed = Issue.objects.filter(
            pk=issue.pk, state=IssueState.RESOLVED_NEXT, resolved_after=issue.resolved_after
        ).update(state=IssueState.RESOLVED, resolved_in=release, state_changed_at=now)
        if changed:
            _record(SYSTEM, "errors-issue-resolved", issue, release=release, by="deploy")
    return changed


def _each(issue_id: int, step: Callable[[], int]) -> int:
    try:
        return step()
    except Exception:
        log.exception("issue %s could not be brought up to date", issue_id)
        return 0


# --- what people do with issues: resolve, ignore, merge, split (each audited) ------------


@dataclass(frozen=True)
class Ignore:
    """Until one of: a time, this many more events, more than this many events an hour."""

    until: datetime | None = None
    events: int | None = None
    per_hour: int | None = None


def _record(actor: Actor, action: str, issue: Issue, **data: Any) -> None:
    actor.record(action, issue.project.org, issue.title[:200], id=issue.pk, **data)


def _set_state(issue: Issue, now: datetime, **fields: Any) -> None:
    fields = {
        "state_changed_at": now,
        "ignored_until": None,
        "ignored_until_count": None,
        "ignored_rate": None,
        **fields,
    }
    Issue.objects.filter(pk=issue.pk).update(**fields)
    for name, value in fields.items():
        setattr(issue, name, value)


def _open(issue: Issue) -> None:
    if issue.state == IssueState.MERGED:
        raise Refusal("This issue was merged into another; change that one instead")


def resolve(issue: Issue, release: str, actor: Actor, now: datetime) -> None:
    """Resolved in `release` (default: the newest release it was seen in): later events
    of an older release leave it resolved."""
    _open(issue)
    release = (release.strip() or newest_seen_in(issue))[:200]
    with transaction.atomic():
        _set_state(issue, now, state=IssueState.RESOLVED, resolved_in=release, resolved_after="")
        _record(actor, "errors-issue-resolved", issue, release=release)


def newest_seen_in(issue: Issue) -> str:
    """The newest release the issue's events named, by the release order (not the release
    of its latest event: an old client may have sent that one)."""
    names = Event.objects.filter(issue=issue).exclude(release="").values_list("release")
    return order.newest_of(issue.project, sorted({name for (name,) in names}))


def resolve_in_next_release(issue: Issue, actor: Actor, now: datetime) -> None:
    """Fixed in a release not made yet: resolved in the first release newer than the
    newest one the project has seen."""
    _open(issue)
    after = order.newest(issue.project)
    with transaction.atomic():
        _set_state(issue, now, state=IssueState.RESOLVED_NEXT, resolved_in="", resolved_after=after)
        _record(actor, "errors-issue-resolved-next", issue, after=after)


def unresolve(issue: Issue, actor: Actor, now: datetime) -> None:
    _open(issue)
    with transaction.atomic():
        _set_state(issue, now, state=IssueState.UNRESOLVED)
        _record(actor, "errors-issue-unresolved", issue)


def ignore(issue: Issue, until: Ignore, actor: Actor, now: datetime) -> None:
    _open(issue)
    if until.until is not None and until.until <= now:
        raise Refusal("Ignore it until a time in the future")
    if (until.events is not None and until.events < 1) or (
        until.per_hour is not None and until.per_hour < 1
    ):
        raise Refusal("Give a number of events of at least 1")
    count = issue.event_count + until.events if until.events is not None else None
    with transaction.atomic():
        _set_state(
            issue,
            now,
            state=IssueState.IGNORED,
            ignored_until=until.until,
            ignored_until_count=count,
            ignored_rate=until.per_hour,
            rate_hour=None,
            rate_events=0,
        )
        _record(
            actor,
            "errors-issue-ignored",
            issue,
            until=until.until.isoformat() if until.until else None,
            events=until.events,
            per_hour=until.per_hour,
        )


ACTIONS = ("resolve", "resolve-next", "unresolve", "ignore")


def apply(issues: list[Issue], action: str, actor: Actor, now: datetime, **how: Any) -> int:
    """One action on several issues (the list's bulk actions), all or none; how many."""
    if action not in ACTIONS:
        raise Refusal(f"Choose what to do: {', '.join(ACTIONS)}")
    with transaction.atomic():
        for issue in issues:
            _apply_one(issue, action, actor, now, how)
    return len(issues)


def _apply_one(issue: Issue, action: str, actor: Actor, now: datetime, how: dict[str, Any]) -> None:
    if action == "resolve":
        resolve(issue, how.get("release", ""), actor, now)
    elif action == "resolve-next":
        resolve_in_next_release(issue, actor, now)
    elif action == "unresolve":
        unresolve(issue, actor, now)
    else:
        ignore(issue, how.get("until") or Ignore(), actor, now)


def recount(issue: Issue) -> None:
    """The issue's counts and dates again from its events (after a merge or a split)."""
    events = Event.objects.filter(issue=issue)
    found = events.aggregate(n=Count("id"), first=Min("received_at"), last=Max("received_at"))
    users = events.exclude(user_key="").values("user_key").distinct().count()
    fields: dict[str, Any] = {"event_count": found["n"] or 0, "users_affected": users}
    if found["n"]:
        first, last = events.order_by("received_at", "id").first(), events.first()
        assert first is not None and last is not None
        fields.update(
            first_seen=found["first"],
            last_seen=found["last"],
            first_release=first.release,
            last_release=last.release,
        )
    Issue.objects.filter(pk=issue.pk).update(**fields)
    issue.refresh_from_db()


def lock(issues: list[Issue]) -> list[Issue]:
    """The issues read again and locked, in one order (two merges at once cannot each
    hold what the other waits for)."""
    found = Issue.objects.select_for_update().filter(pk__in=[i.pk for i in issues])
    return list(found.order_by("pk"))


def merge(kept: Issue, others: list[Issue], actor: Actor) -> Issue:
    """Move the others' events into `kept`; events their groupings make later land there
    too. Each event remembers the issue it came from, so it can be split out again."""
    others = [o for o in others if o.pk != kept.pk]
    if kept.state == IssueState.MERGED or any(o.state == IssueState.MERGED for o in others):
        raise Refusal("One of these issues was merged already; merge the one it went into")
    if not others:
        raise Refusal("Choose at least two issues to merge")
    if any(o.project_id != kept.project_id for o in others):
        raise Refusal("Only issues of the same project can be merged")
    with transaction.atomic():
        # Locked first: an event being stored in one of them is waited for and moved too,
        # and an event of theirs stored meanwhile waits, then finds them merged.
        if any(i.state == IssueState.MERGED for i in lock([kept, *others])):
            raise Refusal("One of these issues was merged already; merge the one it went into")
        for other in others:
            Event.objects.filter(issue=other, merged_from__isnull=True).update(merged_from=other)
            Event.objects.filter(issue=other).update(issue=kept)
            Issue.objects.filter(merged_into=other).update(merged_into=kept)
            Issue.objects.filter(pk=other.pk).update(
                state=IssueState.MERGED, merged_into=kept, event_count=0, users_affected=0
            )
        recount(kept)
        _record(actor, "errors-issues-merged", kept, merged=[o.pk for o in others])
    return kept


def split(event: Event, actor: Actor, now: datetime) -> Issue:
    """Take the group `event` came from back out of the issue it was merged into: that
    group's events, and its future ones, belong to its own issue again."""
    group = event.merged_from
    if group is None:
        raise Refusal("This event was not merged in from another issue; nothing to split")
    kept = event.issue
    with transaction.atomic():
        # Locked first, as merge does: an event of the group being stored in `kept` is
        # waited for and moved out too.
        lock([kept, group])
        if not Issue.objects.filter(pk=group.pk, merged_into=kept).exists():
            raise Refusal("This group was split out already")
        Event.objects.filter(issue=kept, merged_from=group).update(issue=group, merged_from=None)
        # With no ignoring left over from before the merge (an ignored_until would
        # alert its next event as back).
        Issue.objects.filter(pk=group.pk).update(
            merged_into=None,
            state=IssueState.UNRESOLVED,
            state_changed_at=now,
            ignored_until=None,
            ignored_until_count=None,
            ignored_rate=None,
        )
        recount(kept)
        recount(group)
        _record(actor, "errors-issue-split", group, out_of=kept.pk)
    return group


def change_alerts(
    project: Project,
    new_issues: bool,
    regressions: bool,
    volume_events: int,
    volume_minutes: int,
    actor: Actor,
) -> None:
    if volume_events < 0 or not 1 <= volume_minutes <= 24 * 60:
        raise Refusal("Count 0 or more events within 1 to 1,440 minutes")
    with transaction.atomic():
        project.alert_new_issues, project.alert_regressions = new_issues, regressions
        project.volume_events, project.volume_minutes = volume_events, volume_minutes
        project.save(
            update_fields=[
                "alert_new_issues",
                "alert_regressions",
                "volume_events",
                "volume_minutes",
            ]
        )
        actor.record(
            "errors-alerts-changed",
            project.org,
            project.name,
            id=project.pk,
            new_issues=new_issues,
            regressions=regressions,
            volume=f"{volume_events} in {volume_minutes} min",
        )


def link_service(project: Project, service_id: int | None, actor: Actor) -> None:
    """Order the project's releases by the deploys of this service (None: by versions)."""
    from onwatch.deploys import services as deploys

    names = dict(deploys.service_choices(project.org))
    if service_id is not None and service_id not in names:
        raise Refusal("There is no such service in this organization")
    with transaction.atomic():
        project.service_id = service_id
        project.save(update_fields=["service"])
        actor.record(
            "errors-service-linked",
            project.org,
            project.name,
            id=project.pk,
            service=names.get(service_id) if service_id is not None else None,
        )
