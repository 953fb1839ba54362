"""What other apps call to alert people. Every alert becomes durable deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet

from onwatch.alerts import apprise
from onwatch.alerts.models import (
    Channel,
    Delivery,
    EscalationPolicy,
    Incident,
    IncidentState,
    Maintenance,
)
from onwatch.core import jobs, links
from onwatch.core.crons import next_after
from onwatch.core.models import Organization

DELIVERY_ATTEMPTS = 6
TEST_TITLE = "onwatch test notification"
TEST_BODY = "If you can read this, onwatch's alerts reach you on this channel."


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


def add_channel(org: Organization, name: str, url: str, created_by: Any = None) -> Channel:
    """Raises apprise.ChannelError for a URL Apprise does not understand."""
    summary = apprise.summarize(url)
    return Channel.objects.create(
        org=org,
        name=name,
        url=url.strip(),
        service=summary.service,
        location=summary.location,
        created_by=created_by,
    )


def change_channel(channel: Channel, name: str, url: str = "") -> list[str]:
    """Rename and/or point at a new URL (empty keeps the old one); the changed fields."""
    changed = []
    if name != channel.name:
        channel.name = name
        changed.append("name")
    if url:
        summary = apprise.summarize(url)
        channel.url = url.strip()
        channel.service, channel.location = summary.service, summary.location
        changed.append("url")
    if changed:
        channel.save()
    return changed


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


def send_test(channel: Channel) -> Delivery:
    return deliver(channel, TEST_TITLE, TEST_BODY, is_test=True)


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
