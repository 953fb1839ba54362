"""What other apps call to alert people. Every alert becomes durable deliveries."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet

from onwatch.alerts import apprise
from onwatch.alerts.models import (
    Channel as Channel,  # re-exported: other apps name it in their types, through here
)
from onwatch.alerts.models import (
    Delivery,
    EscalationPolicy,
    EscalationStep,
    Incident,
    IncidentState,
    Maintenance,
)
from onwatch.core import audit, jobs, links
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.crons import next_after, validate_schedule, zone
from onwatch.core.models import Organization

DELIVERY_ATTEMPTS = 6
TEST_TITLE = "onwatch test notification"
TEST_BODY = "If you can read this, onwatch's alerts reach you on this channel."
WEEK_MINUTES = 10080
NOTE_LENGTH = 4000
# Far enough either way for any real window; beyond, time zone arithmetic can overflow.
EARLIEST, LATEST = 2000, 2200
STEP_MINUTES = f"A step starts from 0 to {WEEK_MINUTES} minutes after the incident opens."
REPEAT_MINUTES = f"Reminders repeat every 0 (never) to {WEEK_MINUTES} minutes."
WINDOW_MINUTES = f"A window lasts from 1 to {WEEK_MINUTES} minutes."


def channel_count(org: Organization) -> int:
    return Channel.objects.filter(org=org).count()


def recent_deliveries(org: Organization, shown: int) -> list[Delivery]:
    return list(Delivery.objects.filter(org=org)[:shown])


def unresolved_incident_count(org: Organization, source_prefix: str) -> int:
    """Open or acknowledged incidents raised by one app (`source_prefix`, e.g. "uptime.")."""
    unresolved = [IncidentState.OPEN, IncidentState.ACKNOWLEDGED]
    return Incident.objects.filter(
        org=org, state__in=unresolved, source__startswith=source_prefix
    ).count()


class Refused(ValueError):
    """A change the rules refuse. The message is one line that says what to do instead;
    `field` names the input it is about, so a form shows it next to that field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def _refuse(message: str, field: str) -> None:
    """Refuse with `message` unless it is empty (a `..._refusal` function's answer)."""
    if message:
        raise Refused(message, field)


def _require(ok: object, message: str, field: str) -> None:
    if not ok:
        raise Refused(message, field)


# --- channels ----------------------------------------------------------------------------


def channel_name_refusal(org: Organization, name: str, channel: Channel | None = None) -> str:
    """Why `name` cannot be used; empty when it can."""
    taken = Channel.objects.filter(org=org, name__iexact=name.strip())
    if channel is not None:
        taken = taken.exclude(pk=channel.pk)
    return "Another channel already has this name; pick another." if taken.exists() else ""


def add_channel(org: Organization, name: str, url: str, actor: Actor = SYSTEM) -> Channel:
    """Raises Refused for a name in use and apprise.ChannelError for a URL Apprise does not
    understand. The actor defaults to onwatch itself, for set-up code; people's changes
    name them."""
    name = name.strip()
    _refuse(channel_name_refusal(org, name), "name")
    summary = apprise.summarize(url)
    with transaction.atomic():
        channel = Channel.objects.create(
            org=org,
            name=name,
            url=url.strip(),
            service=summary.service,
            location=summary.location,
            created_by=actor.user,
        )
        audit.record(
            "channel-added", actor=actor, org=org, target=channel.name, service=channel.service
        )
    return channel


def change_channel(channel: Channel, name: str, url: str, actor: Actor) -> list[str]:
    """Rename and/or point at a new URL (empty keeps the old one); the changed fields."""
    name = name.strip()
    _refuse(channel_name_refusal(channel.org, name, channel), "name")
    summary = apprise.summarize(url) if url.strip() else None
    old_name = channel.name
    changed = []
    if name != channel.name:
        channel.name = name
        changed.append("name")
    if summary is not None:
        channel.url = url.strip()
        channel.service, channel.location = summary.service, summary.location
        changed.append("url")
    if changed:
        with transaction.atomic():
            channel.save()
            # Which fields changed, never their values: the URL is a secret.
            audit.record(
                "channel-changed",
                actor=actor,
                org=channel.org,
                target=channel.name,
                was=old_name,
                changed=changed,
            )
    return changed


@transaction.atomic
def remove_channel(channel: Channel, actor: Actor) -> None:
    """Its past deliveries stay in the log."""
    name = channel.name
    channel.delete()
    audit.record("channel-removed", actor=actor, org=channel.org, target=name)


def send_test(channel: Channel, actor: Actor) -> Delivery:
    with transaction.atomic():
        delivery = deliver(channel, TEST_TITLE, TEST_BODY, is_test=True)
        audit.record("channel-tested", actor=actor, org=channel.org, target=channel.name)
    return delivery


# --- a member's own channel: where they hear about their own pushes ------------------------

OWN_CHANNEL_NAME = "own channel of {who}"


def own_channel(org: Organization, user: Any) -> Channel | None:
    """The member's own channel in `org`, if they set one and are still a member."""
    if user is None or not getattr(user, "pk", None):
        return None
    return Channel.every.filter(org=org, owner=user, owner__memberships__org=org).first()


def own_channels_reach_inside() -> bool:
    """Whether the operator let members' own channels reach addresses inside the network
    (ONWATCH_OWN_CHANNELS_PRIVATE); off by default: see apprise.refuse_inside."""
    return bool(settings.OWN_CHANNELS_PRIVATE)


def set_own_channel(org: Organization, user: Any, url: str, actor: Actor) -> Channel:
    """Set (or replace) where `user` hears about their own pushes. Raises
    apprise.ChannelError for a URL Apprise does not understand, or one that leads inside
    the network."""
    summary = apprise.summarize(url)
    if not own_channels_reach_inside():
        apprise.refuse_inside(url)
    name = OWN_CHANNEL_NAME.format(who=user.email or user.get_username())[:100]
    with transaction.atomic():
        channel = own_channel(org, user) or Channel(org=org, owner=user, created_by=actor.user)
        added = channel.pk is None
        channel.name, channel.url = name, url.strip()
        channel.service, channel.location = summary.service, summary.location
        channel.save()
        # Which channel changed, never its URL: it is a secret.
        audit.record(
            "own-channel-set" if added else "own-channel-changed",
            actor=actor,
            org=org,
            target=channel.name,
            service=channel.service,
        )
    return channel


def remove_own_channel(org: Organization, user: Any, actor: Actor) -> bool:
    """False when the member had none. Its past deliveries stay in the log."""
    with transaction.atomic():
        channel = own_channel(org, user)
        if channel is None:
            return False
        channel.delete()
        audit.record("own-channel-removed", actor=actor, org=org, target=channel.name)
    return True


# --- escalation policies -----------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    after_minutes: int
    channel_ids: tuple[int, ...]


@dataclass(frozen=True)
class PolicySpec:
    name: str
    repeat_minutes: int = 0
    notify_recovery: bool = True
    steps: tuple[StepSpec, ...] = ()


def policy_name_refusal(
    org: Organization, name: str, policy: EscalationPolicy | None = None
) -> str:
    """Why `name` cannot be used; empty when it can."""
    taken = EscalationPolicy.objects.filter(org=org, name__iexact=name.strip())
    if policy is not None:
        taken = taken.exclude(pk=policy.pk)
    if taken.exists():
        return f"Another policy is already called {name.strip()!r}; pick another name."
    return ""


def _step_channels(org: Organization, ids: tuple[int, ...]) -> list[Channel]:
    found = {c.pk: c for c in Channel.objects.filter(org=org, pk__in=ids)}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise Refused(
            f"No channel {missing[0]} in this organization; see /api/v1/channels/", "steps"
        )
    return [found[pk] for pk in dict.fromkeys(ids)]


def _policy_steps(org: Organization, spec: PolicySpec) -> list[tuple[int, list[Channel]]]:
    steps = [s for s in spec.steps if s.channel_ids]
    nobody = "Give at least one step a channel; a policy without steps tells nobody."
    _require(steps, nobody, "steps")
    for s in steps:
        _require(0 <= s.after_minutes <= WEEK_MINUTES, STEP_MINUTES, "steps")
    # Sorted by delay: open incidents count steps by position (next_step), and the sorted
    # order keeps that meaning.
    ordered = sorted(steps, key=lambda s: s.after_minutes)
    return [(s.after_minutes, _step_channels(org, s.channel_ids)) for s in ordered]


@transaction.atomic
def save_policy(
    org: Organization, policy: EscalationPolicy | None, spec: PolicySpec, actor: Actor
) -> EscalationPolicy:
    """Add a policy (`policy` None) or replace one whole, steps included."""
    name = spec.name.strip()
    _require(name, "Give the policy a name.", "name")
    _refuse(policy_name_refusal(org, name, policy), "name")
    _require(0 <= spec.repeat_minutes <= WEEK_MINUTES, REPEAT_MINUTES, "repeat_minutes")
    steps = _policy_steps(org, spec)
    added = policy is None
    policy = policy or EscalationPolicy(org=org)
    policy.name, policy.repeat_minutes = name, spec.repeat_minutes
    policy.notify_recovery = spec.notify_recovery
    policy.save()
    EscalationStep.objects.filter(policy=policy).delete()
    for position, (after, channels) in enumerate(steps):
        step = EscalationStep.objects.create(policy=policy, position=position, after_minutes=after)
        step.channels.set(channels)
    # Read back fresh: a caller's prefetched steps are the ones just replaced.
    saved = EscalationPolicy.objects.prefetch_related("steps__channels").get(pk=policy.pk)
    audit.record(
        "policy-added" if added else "policy-changed",
        actor=actor,
        org=org,
        target=saved.name,
        repeat_minutes=saved.repeat_minutes,
        notify_recovery=saved.notify_recovery,
        steps=describe_policy(saved),
    )
    return saved


@transaction.atomic
def remove_policy(policy: EscalationPolicy, actor: Actor) -> None:
    """Monitors and incidents that used it notify every channel instead."""
    name = policy.name
    policy.delete()
    audit.record("policy-removed", actor=actor, org=policy.org, target=name)


def describe_policy(policy: EscalationPolicy) -> list[str]:
    """One line per step, for the audit log and the list page."""
    return [
        f"after {s.after_minutes} min: {', '.join(ch.name for ch in s.channels.all())}"
        for s in policy.steps.all()
    ]


# --- maintenance windows -----------------------------------------------------------------


@dataclass(frozen=True)
class MaintenanceSpec:
    """A one-off window (starts_at, ends_at) or a recurring one (cron, duration_minutes).
    Times without an offset are wall-clock times in `tz`."""

    name: str
    recurring: bool = False
    tz: str = "UTC"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cron: str = ""
    duration_minutes: int = 0
    sources: tuple[str, ...] = ()
    public: bool = True


def check_maintenance(spec: MaintenanceSpec) -> MaintenanceSpec:
    """The window as it will be saved (times in UTC, the other kind's fields cleared);
    raises Refused with the first thing wrong."""
    name = spec.name.strip()
    _require(name, "Give the window a name.", "name")
    tz = spec.tz.strip()
    try:
        zone(tz)
    except ValidationError as e:
        raise Refused(e.messages[0], "tz") from None
    sources = tuple(sorted({s.strip() for s in spec.sources if s.strip()}))
    too_long = "Each source is at most 200 characters."
    _require(all(len(s) <= 200 for s in sources), too_long, "sources")
    checked = replace(spec, name=name, tz=tz, sources=sources)
    return _recurring(checked) if spec.recurring else _once(checked)


def _recurring(spec: MaintenanceSpec) -> MaintenanceSpec:
    cron = spec.cron.strip()
    _require(cron, "Give a cron expression for a recurring window.", "cron")
    try:
        validate_schedule(cron, spec.tz)
    except ValidationError as e:
        raise Refused(e.messages[0], "cron") from None
    minutes = spec.duration_minutes
    _require(minutes, "Say how many minutes each window lasts.", "duration_minutes")
    _require(1 <= minutes <= WEEK_MINUTES, WINDOW_MINUTES, "duration_minutes")
    return replace(spec, cron=cron, starts_at=None, ends_at=None)


def _once(spec: MaintenanceSpec) -> MaintenanceSpec:
    _require(spec.starts_at, "Say when the window starts.", "starts_at")
    _require(spec.ends_at, "Say when the window ends.", "ends_at")
    assert spec.starts_at is not None and spec.ends_at is not None
    starts, ends = (
        _in_utc(spec.starts_at, spec.tz, "starts_at"),
        _in_utc(spec.ends_at, spec.tz, "ends_at"),
    )
    _require(ends > starts, "The window must end after it starts.", "ends_at")
    return replace(spec, starts_at=starts, ends_at=ends, cron="", duration_minutes=0)


def _in_utc(value: datetime, tz: str, field: str) -> datetime:
    # Checked before any arithmetic: far from today, time zone arithmetic can overflow.
    years = f"Times must lie between the years {EARLIEST} and {LATEST}."
    _require(EARLIEST <= value.year < LATEST, years, field)
    local = value if value.tzinfo else value.replace(tzinfo=zone(tz))
    return local.astimezone(UTC)


@transaction.atomic
def save_maintenance(
    org: Organization, m: Maintenance | None, spec: MaintenanceSpec, actor: Actor
) -> Maintenance:
    """Plan a window (`m` None) or replace one whole."""
    checked = check_maintenance(spec)
    added = m is None
    m = m or Maintenance(org=org)
    m.name, m.tz, m.sources, m.public = checked.name, checked.tz, list(checked.sources), spec.public
    m.cron, m.duration_minutes = checked.cron, checked.duration_minutes
    m.starts_at, m.ends_at = checked.starts_at, checked.ends_at
    m.save()
    audit.record(
        "maintenance-added" if added else "maintenance-changed",
        actor=actor,
        org=org,
        target=m.name,
        when=describe_maintenance(m),
        sources=m.sources,
        public=m.public,
    )
    return m


@transaction.atomic
def remove_maintenance(m: Maintenance, actor: Actor) -> None:
    """Alerts it held go out on the next tick."""
    name = m.name
    m.delete()
    audit.record("maintenance-removed", actor=actor, org=m.org, target=name)


def describe_maintenance(m: Maintenance) -> str:
    if m.cron:
        return f"{m.cron} ({m.tz}) for {m.duration_minutes} min"
    local = zone(m.tz)
    assert m.starts_at is not None and m.ends_at is not None
    start, end = m.starts_at.astimezone(local), m.ends_at.astimezone(local)
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({m.tz})"


# --- what people do about incidents -----------------------------------------------------


def acknowledge_incident(incident: Incident, actor: Actor) -> None:
    """Someone is on it: escalation and reminders stop. Refused unless it is open."""
    from onwatch.alerts import incidents  # it imports deliver() from here

    with transaction.atomic():
        if not incidents.acknowledge(incident, actor.name, user=actor.user):
            raise Refused(f"This incident is already {incident.state}; nothing to do.")
        audit.record(
            "incident-acknowledged",
            actor=actor,
            org=incident.org,
            target=incident.title,
            id=incident.pk,
        )


def resolve_incident(incident: Incident, actor: Actor) -> None:
    """Resolved by hand: whoever was told hears that it is over. Refused once resolved."""
    from onwatch.alerts import incidents  # it imports deliver() from here

    with transaction.atomic():
        title = f"Resolved by {actor.name}: {incident.title}"
        if (
            incidents.resolve_incident(
                incident.org, incident.source, {}, title=title, actor=actor.name, only=incident.pk
            )
            is None
        ):
            incident.refresh_from_db()
            raise Refused(f"This incident is already {incident.state}; nothing to do.")
        audit.record(
            "incident-resolved",
            actor=actor,
            org=incident.org,
            target=incident.title,
            id=incident.pk,
        )
    incident.refresh_from_db()


def add_incident_note(incident: Incident, text: str, actor: Actor) -> None:
    text = text.strip()
    wrong = "The note was empty or too long; write up to 4,000 characters."
    _require(0 < len(text) <= NOTE_LENGTH, wrong, "text")
    from onwatch.alerts import incidents  # it imports deliver() from here

    with transaction.atomic():
        incidents.add_note(incident, actor.name, text)
        audit.record(
            "incident-note-added",
            actor=actor,
            org=incident.org,
            target=incident.title,
            id=incident.pk,
        )


def deliver(
    channel: Channel,
    title: str,
    body: str,
    is_test: bool = False,
    notify_type: apprise.NotifyType = "info",
) -> Delivery:
    with transaction.atomic():
        delivery = Delivery.objects.create(
            org=channel.org,
            channel=channel,
            channel_name=channel.name,
            title=title[:200],
            body=body,
            is_test=is_test,
            notify_type=notify_type,
        )
        delivery.job = jobs.enqueue(
            "alerts.deliver",
            {"delivery": delivery.pk},
            org=channel.org,
            max_attempts=DELIVERY_ATTEMPTS,
        )
        delivery.save(update_fields=["job"])
    return delivery


def raise_alert(
    org: Organization | None,
    title: str,
    body: str,
    link: str = "",
    notify_type: apprise.NotifyType = "failure",
) -> list[Delivery]:
    """Send to every channel of `org` (every organization's, for install-wide trouble).

    `link` is the path of the page that shows the trouble; the alert carries it as a full
    address, so the reader gets from the alert to the page in one step.
    """
    if link:
        body = f"{body}\nDetails: {links.absolute(link)}"
    channels = Channel.objects.all() if org is None else Channel.objects.filter(org=org)
    return [deliver(ch, title, body, notify_type=notify_type) for ch in channels]


def channels_of(org: Organization, ids: list[int]) -> list[Channel]:
    """The organization's channels with these ids (never a member's own); raises Refused
    naming the first id that is not one of them."""
    found = {c.pk: c for c in Channel.objects.filter(org=org, pk__in=ids)}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise Refused(
            f"No channel {missing[0]} in this organization; see /api/v1/channels/", "channels"
        )
    return [found[pk] for pk in dict.fromkeys(ids)]


def organization_channels(org: Organization) -> list[Channel]:
    return list(Channel.objects.filter(org=org))


def alert_channels(
    channels: list[Channel],
    title: str,
    body: str,
    link: str = "",
    notify_type: apprise.NotifyType = "failure",
) -> list[Delivery]:
    """Send to these channels (each once): an app that chooses who hears, as a service
    does for its pipelines (its channels and the pusher's own)."""
    if link:
        body = f"{body}\nDetails: {links.absolute(link)}"
    unique = list({ch.pk: ch for ch in channels}.values())
    return [deliver(ch, title, body, notify_type=notify_type) for ch in unique]


def first_told(org: Organization, policy: EscalationPolicy | None) -> list[Channel]:
    """Who hears first about trouble under `policy`: its earliest step's channels, or
    every channel of the organization without a policy."""
    if policy is None:
        return list(Channel.objects.filter(org=org))
    steps = sorted(policy.steps.all(), key=lambda s: (s.after_minutes, s.position, s.pk))
    return list(steps[0].channels.all()) if steps else []


def send_notice(
    org: Organization,
    policy: EscalationPolicy | None,
    title: str,
    body: str,
    notify_type: apprise.NotifyType,
) -> list[Delivery]:
    """A notice that is not an outage (a certificate expires soon, and later: renewed):
    sent once to whoever would hear first, without escalation or reminders."""
    return [deliver(ch, title, body, notify_type=notify_type) for ch in first_told(org, policy)]


# --- what other apps read of alerts' objects: escalation policies (uptime's pickers in its
# form, API and YAML import), incidents and maintenance windows (its public status pages).
# Through here, never alerts' models.


def policies(org: Organization) -> QuerySet[EscalationPolicy]:
    return EscalationPolicy.objects.filter(org=org).order_by("name", "id")


def policy_of(org: Organization, pk: int) -> EscalationPolicy | None:
    """The organization's policy with this id; None for another organization's."""
    return EscalationPolicy.objects.filter(org=org, pk=pk).first()


@dataclass(frozen=True)
class IncidentFacts:
    """What a public page may show of an incident: never its title, evidence or notes,
    which name internals."""

    source: str
    state: str
    opened_at: datetime
    resolved_at: datetime | None

    @property
    def ongoing(self) -> bool:
        return self.state != IncidentState.RESOLVED

    @property
    def acknowledged(self) -> bool:
        return self.state == IncidentState.ACKNOWLEDGED


def incident_facts(
    org_id: int, sources: list[str], since: datetime, limit: int
) -> list[IncidentFacts]:
    """The incidents of `sources` opened since `since`, and any still unresolved; newest
    first."""
    unresolved = [IncidentState.OPEN, IncidentState.ACKNOWLEDGED]
    rows = (
        Incident.objects.filter(org_id=org_id, source__in=sources)
        .filter(Q(opened_at__gte=since) | Q(state__in=unresolved))
        .order_by("-opened_at", "-id")
        .values_list("source", "state", "opened_at", "resolved_at")[:limit]
    )
    return [IncidentFacts(source, str(state), at, end) for source, state, at, end in rows]


@dataclass(frozen=True)
class Window:
    """A public maintenance window's current or next occurrence."""

    name: str
    sources: list[str]  # empty: everything
    start: datetime
    end: datetime
    recurring: bool


def public_windows(org_id: int, now: datetime, ahead: timedelta) -> list[Window]:
    """The public maintenance windows in progress, or starting within `ahead`."""
    found = []
    for m in Maintenance.objects.filter(org_id=org_id, public=True):
        window = current_or_next_window(m, now)
        if window is not None and window[0] < now + ahead:
            found.append(Window(m.name, list(m.sources), *window, recurring=bool(m.cron)))
    return found


def current_or_next_window(m: Maintenance, now: datetime) -> tuple[datetime, datetime] | None:
    # Imported here: incidents imports this module (to deliver its alerts).
    from onwatch.alerts.incidents import last_start

    if m.cron:
        if not m.duration_minutes:
            return None
        length = timedelta(minutes=m.duration_minutes)
        start = last_start(m, now)
        if start is None or now >= start + length:
            try:
                start = next_after(m.cron, m.tz, now)
            except ValidationError:
                return None  # a broken expression announces nothing
        return start, start + length
    if m.starts_at is not None and m.ends_at is not None and now < m.ends_at:
        return m.starts_at, m.ends_at
    return None
