"""Incidents: opened by whatever notices trouble, escalated by policy, resolved when it ends.

Every function takes `now` so tests drive time by hand; the scheduler calls
`release_ended_maintenance()` and `escalate_due()` on each tick (see tasks.on_tick).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from onwatch.alerts.models import (
    Channel,
    EscalationPolicy,
    Incident,
    IncidentEvent,
    IncidentState,
    Maintenance,
)
from onwatch.alerts.services import deliver
from onwatch.core import links
from onwatch.core.crons import validate_schedule, zone
from onwatch.core.models import Organization

log = logging.getLogger("onwatch.incidents")

UNRESOLVED = [IncidentState.OPEN, IncidentState.ACKNOWLEDGED]
# Hold reasons starting with this were set by a maintenance window; the tick releases them
# when no window covers the source any more. Other reasons (a parent is down) are released
# by whoever set them.
MAINTENANCE_HOLD = "maintenance: "
# Escalations looked at per tick: a backlog is worked off over several ticks instead of
# holding one long transaction.
BATCH = 500


@dataclass(frozen=True)
class About:
    """What the raiser of an incident knows beyond its title, for the people alerted."""

    began_at: datetime | None = None  # the first failed check, if before the opening
    page: str = ""  # path of the page that shows what is wrong
    advice: str = ""  # what to do, in a sentence or two


def current(org: Organization, source: str) -> Incident | None:
    return Incident.objects.filter(org=org, source=source, state__in=UNRESOLVED).first()


def latest(org: Organization, source: str) -> Incident | None:
    """The newest incident of `source`, resolved or not: for a page that links to it."""
    return Incident.objects.filter(org=org, source=source).order_by("-opened_at", "-pk").first()


def in_maintenance(org: Organization, source: str, now: datetime) -> Maintenance | None:
    for m in Maintenance.objects.filter(org=org):
        if m.sources and source not in m.sources:
            continue
        if maintenance_active(m, now):
            return m
    return None


def maintenance_active(m: Maintenance, now: datetime) -> bool:
    if m.cron:
        start = last_start(m, now)
        return start is not None and now < start + timedelta(minutes=m.duration_minutes)
    return bool(m.starts_at and m.ends_at and m.starts_at <= now < m.ends_at)


def last_start(m: Maintenance, now: datetime) -> datetime | None:
    """The latest start of a recurring window at or before `now`, in the window's zone.

    The latest one, not the first within `duration` ago: with back-to-back windows (hourly
    for 60 minutes) the first is just over while the next has begun.
    """
    try:
        validate_schedule(m.cron, m.tz)
    except ValidationError:
        return None  # an invalid expression never holds alerts back
    # cronsim's reverse iteration is strictly before its start unless that has
    # microseconds; one microsecond later makes a start exactly at `now` count.
    at = now.astimezone(zone(m.tz)) + timedelta(microseconds=1)
    start: datetime = next(CronSim(m.cron, at, reverse=True))
    return start


def open_incident(
    org: Organization,
    source: str,
    title: str,
    evidence: dict[str, Any],
    now: datetime | None = None,
    policy: EscalationPolicy | None = None,
    held: str = "",
    about: About | None = None,
    channels: list[Channel] | None = None,
) -> Incident:
    """Open an incident for `source`, or return the unresolved one it already has.

    `held` says why alerts are held back (a parent is down); maintenance windows hold them
    too. Held incidents are recorded but send nothing until released. `about` says when
    the trouble began, which page shows it and what to do: every alert carries them.
    `channels`, without a policy: whom it reaches in place of every channel.
    """
    about = about or About()
    now = now or timezone.now()
    existing = current(org, source)
    if existing is not None:
        return existing
    window = in_maintenance(org, source, now)
    if window is not None and not held:
        held = f"{MAINTENANCE_HOLD}{window.name}"
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                org=org,
                source=source,
                title=title[:200],
                policy=policy,
                opened_at=now,
                began_at=about.began_at,
                page=about.page[:200],
                advice=about.advice,
                held=held[:200],
                evidence=evidence,
                next_action_at=None if held else now,
                only_channels=channels is not None,
            )
            if channels:
                incident.channels.set(channels)
            IncidentEvent.objects.create(incident=incident, at=now, kind="opened", text=title)
            if held:
                IncidentEvent.objects.create(incident=incident, at=now, kind="held", text=held)
            else:
                # In the same transaction: the incident and its first deliveries exist
                # together or not at all.
                escalate(incident, now)
    except IntegrityError:
        # Opened by another process a moment ago: one incident per source.
        found = current(org, source)
        if found is None:
            raise
        return found
    return incident


def resolve_incident(
    org: Organization,
    source: str,
    evidence: dict[str, Any],
    now: datetime | None = None,
    title: str = "",
    actor: str = "",
    only: int | None = None,
) -> Incident | None:
    """Resolve the unresolved incident of `source` and tell whoever was told about it;
    `actor`: the person who resolved it by hand (empty: its source recovered); `only`:
    that incident's id, or nothing (a stale page's Resolve must not close a newer one of
    the same source).

    `title` is the recovery notice's own ("shop is up again"): the incident's title says
    what went wrong, and "Resolved: shop is down" reads as an outage at a glance.
    """
    now = now or timezone.now()
    with transaction.atomic():
        unresolved = Incident.objects.select_for_update().filter(
            org=org, source=source, state__in=UNRESOLVED
        )
        incident = (unresolved.filter(pk=only) if only is not None else unresolved).first()
        if incident is None:
            return None
        Incident.objects.filter(pk=incident.pk).update(
            state=IncidentState.RESOLVED, resolved_at=now, next_action_at=None
        )
        IncidentEvent.objects.create(incident=incident, at=now, kind="resolved", actor=actor)
        incident.refresh_from_db()
        notified = notified_channels(incident)
        if notified and (incident.policy is None or incident.policy.notify_recovery):
            notice = title or f"Resolved: {incident.title}"
            for ch in notified:
                deliver(ch, notice, recovery_text(incident, evidence), notify_type="success")
            IncidentEvent.objects.create(
                incident=incident,
                at=now,
                kind="recovered",
                text=", ".join(ch.name for ch in notified),
            )
    return incident


def acknowledge(
    incident: Incident, actor: str, now: datetime | None = None, user: Any = None
) -> bool:
    """Someone is on it: escalation and reminders stop. False if it was not open."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Incident.objects.filter(pk=incident.pk, state=IncidentState.OPEN).update(
            state=IncidentState.ACKNOWLEDGED,
            acknowledged_at=now,
            acknowledged_by=user,
            next_action_at=None,
        )
        if changed:
            IncidentEvent.objects.create(
                incident=incident, at=now, kind="acknowledged", actor=actor
            )
    incident.refresh_from_db()
    return bool(changed)


def add_note(incident: Incident, actor: str, text: str, now: datetime | None = None) -> None:
    IncidentEvent.objects.create(
        incident=incident, at=now or timezone.now(), kind="note", actor=actor, text=text
    )


def release(incident: Incident, now: datetime | None = None) -> None:
    """Stop holding an incident's alerts back (its parent recovered, maintenance ended).

    A source still inside a maintenance window stays held, now for the window's sake.
    """
    now = now or timezone.now()
    with transaction.atomic():
        held = (
            Incident.objects.select_for_update()
            .filter(pk=incident.pk, state__in=UNRESOLVED)
            .exclude(held="")
        )
        found = held.first()
        if found is None:
            incident.refresh_from_db()
            return
        window = in_maintenance(found.org, found.source, now)
        if window is not None:
            reason = f"{MAINTENANCE_HOLD}{window.name}"
            if found.held != reason:
                Incident.objects.filter(pk=found.pk).update(held=reason)
                IncidentEvent.objects.create(incident=found, at=now, kind="held", text=reason)
        else:
            Incident.objects.filter(pk=found.pk).update(held="", next_action_at=now)
            IncidentEvent.objects.create(incident=found, at=now, kind="released", text=found.held)
            found.refresh_from_db()
            escalate(found, now)
    incident.refresh_from_db()


def release_ended_maintenance(now: datetime | None = None) -> int:
    """Release incidents held by maintenance windows that are over; returns how many."""
    now = now or timezone.now()
    held = Incident.objects.filter(
        state__in=UNRESOLVED, held__startswith=MAINTENANCE_HOLD
    ).select_related("org")
    released = 0
    for incident in held.order_by("id")[:BATCH]:
        try:
            if in_maintenance(incident.org, incident.source, now) is None:
                release(incident, now)
                released += 1
        except Exception:
            # One bad row never stops the tick for the others.
            log.exception("could not release incident %s", incident.pk)
    return released


def escalate_due(now: datetime | None = None) -> int:
    """Run every escalation step and reminder that is due; returns incidents handled."""
    now = now or timezone.now()
    due = Incident.objects.filter(state=IncidentState.OPEN, held="", next_action_at__lte=now)
    done = 0
    for pk in due.order_by("next_action_at", "id").values_list("id", flat=True)[:BATCH]:
        try:
            done += escalate_one(pk, now)
        except Exception:
            log.exception("could not escalate incident %s", pk)
    return done


def escalate_one(pk: int, now: datetime) -> int:
    """Escalate one incident under its row lock, so two schedulers (or an acknowledgement
    landing meanwhile) never make it send twice."""
    with transaction.atomic():
        incident = (
            # Only the incident's row: PostgreSQL locks nothing on the nullable side of the
            # outer join to its policy.
            Incident.objects.select_for_update(of=("self",))
            .filter(pk=pk, state=IncidentState.OPEN, held="", next_action_at__lte=now)
            .select_related("policy", "org")
            .first()
        )
        if incident is None:
            return 0
        escalate(incident, now)
    return 1


def escalate(incident: Incident, now: datetime) -> None:
    """Fire every step whose time has come, then reminders; set when to look again."""
    if incident.state != IncidentState.OPEN or incident.held:
        return
    policy = incident.policy
    next_step = incident.next_step
    nxt: datetime | None = None
    if policy is None:
        if next_step == 0:
            notify(incident, unpoliced_channels(incident), now, "notified")
            next_step = 1
    else:
        # Steps by their delay: a step placed before a shorter one must not block it.
        steps = sorted(policy.steps.all(), key=lambda s: (s.after_minutes, s.position, s.pk))
        start = escalation_start(incident)
        while next_step < len(steps) and now >= start + minutes(steps[next_step].after_minutes):
            notify(incident, list(steps[next_step].channels.all()), now, "notified")
            next_step += 1
        if next_step < len(steps):
            nxt = start + minutes(steps[next_step].after_minutes)
        if policy.repeat_minutes and next_step > 0:
            reminder_at = reminder_due(incident, policy.repeat_minutes, now)
            nxt = min(nxt, reminder_at) if nxt else reminder_at
    Incident.objects.filter(pk=incident.pk).update(next_step=next_step, next_action_at=nxt)
    incident.next_step, incident.next_action_at = next_step, nxt


def unpoliced_channels(incident: Incident) -> list[Channel]:
    """Whom an incident without a policy reaches: those chosen at its opening, or all."""
    if incident.only_channels:
        return list(incident.channels.all())
    return list(Channel.objects.filter(org=incident.org))


def reminder_due(incident: Incident, every: int, now: datetime) -> datetime:
    """Send a reminder if one is due; return when the next one is."""
    last = last_notice(incident) or now
    reminder_at = last + minutes(every)
    if reminder_at <= now:
        notify(incident, notified_channels(incident), now, "reminded")
        reminder_at = now + minutes(every)
    return reminder_at


def escalation_start(incident: Incident) -> datetime:
    """Steps count from when alerting began: the opening, or the last release of a hold
    (a child held back for half an hour starts at its first step, not all at once)."""
    released = incident.events.filter(kind="released").order_by("-at").first()
    return released.at if released else incident.opened_at


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def notify(incident: Incident, channels: list[Channel], now: datetime, kind: str) -> None:
    if not channels:
        return
    prefix = "Reminder: " if kind == "reminded" else ""
    for ch in channels:
        deliver(ch, f"{prefix}{incident.title}", incident_text(incident), notify_type="failure")
    incident.notified = sorted(set(incident.notified) | {ch.pk for ch in channels})
    Incident.objects.filter(pk=incident.pk).update(notified=incident.notified)
    IncidentEvent.objects.create(
        incident=incident, at=now, kind=kind, text=", ".join(ch.name for ch in channels)
    )


def notified_channels(incident: Incident) -> list[Channel]:
    return list(Channel.objects.filter(org=incident.org, pk__in=incident.notified))


def last_notice(incident: Incident) -> datetime | None:
    e = incident.events.filter(kind__in=["notified", "reminded"]).order_by("-at").first()
    return e.at if e else None


def incident_text(incident: Incident) -> str:
    """What is wrong, since when, the evidence, what to do, and where to look."""
    found = incident.evidence
    lines = [f"What is wrong: {found.get('error') or incident.title}"]
    lines.append(f"Since: {clock(incident.since)}{since_note(incident)}")
    for key in ("status", "exit_status", "latency_ms"):
        if found.get(key) not in (None, ""):
            lines.append(f"{key.replace('_', ' ').capitalize()}: {found[key]}")
    lines += output_lines(found)
    if incident.advice:
        lines.append(f"What to do: {incident.advice}")
    return "\n".join(lines + link_lines(incident))


def clock(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def since_note(incident: Incident) -> str:
    if incident.began_at is None or incident.began_at >= incident.opened_at:
        return ""
    return f" ({began_what(incident)}; confirmed {incident.opened_at.astimezone(UTC):%H:%M})"


def began_what(incident: Incident) -> str:
    """What happened when the trouble began: a monitor's first failed check, unless the
    raiser's evidence says ("began": "release 7 went live")."""
    return str(incident.evidence.get("began") or "first failed check")


LINE_SHOWN = 200  # characters of one line of output in an alert, as of an error
OUTPUT_LINES = 3  # a job's last lines in an alert: where its error usually is


def output_lines(evidence: dict[str, Any]) -> list[str]:
    """What the job sent with its failure (a heartbeat), or how the answer began: the
    first thing whoever fixes it needs to see, cut to a few readable lines. The whole
    of it stays on the monitor's page."""
    text = str(evidence.get("body") or "").strip()
    if not text:
        return []
    if looks_binary(text):
        who = "What the job sent" if evidence.get("ping") else "The answer"
        return [f"{who} is binary data, not text; the monitor's page keeps it."]
    if not evidence.get("ping"):
        return ["The answer began with:", one_line(text)]
    shown = [one_line(line) for line in text.splitlines() if line.strip()]
    return ["What the job sent ended with:", *shown[-OUTPUT_LINES:]]


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LINE_SHOWN else line[: LINE_SHOWN - 1].rstrip() + "…"


def looks_binary(text: str) -> bool:
    """Bytes that are not text (decoded, they turn into control and replacement
    characters): naming them helps; quoting them fills the alert with junk."""
    odd = sum(ch == "\ufffd" or not (ch.isprintable() or ch in "\t\r\n") for ch in text)
    return odd * 10 > len(text)


def link_lines(incident: Incident) -> list[str]:
    lines = [f"Incident: {links.page('incident_detail', incident.pk)}"]
    if incident.page:
        lines.append(f"Details: {links.absolute(incident.page)}")
    return lines


def recovery_text(incident: Incident, evidence: dict[str, Any]) -> str:
    assert incident.resolved_at is not None
    took = int((incident.resolved_at - incident.since).total_seconds() // 60)
    text = (
        f"The incident “{incident.title}” is over after {took} min (since {clock(incident.since)})."
    )
    if evidence.get("latency_ms") not in (None, ""):
        text += f"\nLatency now: {evidence['latency_ms']} ms"
    return "\n".join([text, *link_lines(incident)])
