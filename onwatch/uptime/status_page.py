"""What a public status page shows, built only from what was chosen for it.

Everything here hands templates plain dataclasses holding the chosen labels and derived
facts (state, uptime, times). A template given these cannot print a monitor's name, URL,
error text or an incident's internal title: they are never loaded into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from django.utils import timezone

from onwatch.alerts.services import incident_facts, public_windows
from onwatch.uptime import rollups
from onwatch.uptime.models import Monitor, Rollup, State, StatusPage, StatusPageItem
from onwatch.uptime.state import source

BAR_DAYS = 90
BADGE_DAYS = 30
INCIDENT_DAYS = 90
INCIDENT_LIMIT = 50
# Upcoming windows further ahead than this are news for later, not for today's visitors.
MAINTENANCE_AHEAD = timedelta(days=30)
# A bar is drawn every SLOT units of the SVG's width, BAR units wide (the rest is the gap).
SLOT, BAR = 4, 3

# Least uptime (percent) for each colour tier, best first. One failed check in a day of
# minutely checks is 99.93 %: still "good", so a single blip does not paint a bar amber.
TIERS = [(99.9, "good"), (99.0, "minor"), (95.0, "warn"), (0.0, "bad")]
# SVG fill attributes: the Content-Security-Policy allows these, unlike style attributes.
COLOURS = {
    "good": "#2e7d32",
    "minor": "#7cb342",
    "warn": "#f9a825",
    "bad": "#c62828",
    "none": "#c5ccd3",
}
STATE_TEXT = {
    "up": "Operational",
    "down": "Outage",
    "maintenance": "Maintenance",
    "paused": "Not monitored",
    "pending": "Checking",
}


def tier(uptime: float | None) -> str:
    if uptime is None:
        return "none"
    return next(name for least, name in TIERS if uptime >= least)


def uptime_text(uptime: float | None) -> str:
    if uptime is None:
        return "no data"
    # Floored, not rounded: 99.996 % must not read as 100 %.
    shown = int(uptime * 100) / 100
    return f"{shown:.2f}".rstrip("0").rstrip(".") + "%"


@dataclass(frozen=True)
class Bar:
    day: datetime
    uptime: float | None
    x: int

    @property
    def tier(self) -> str:
        return tier(self.uptime)

    @property
    def fill(self) -> str:
        return COLOURS[self.tier]

    @property
    def text(self) -> str:
        return "no data" if self.uptime is None else f"{uptime_text(self.uptime)} up"


@dataclass(frozen=True)
class PublicItem:
    id: int
    label: str
    state: str
    bars: list[Bar]
    uptime: float | None  # over the days the bars cover

    @property
    def state_text(self) -> str:
        return STATE_TEXT[self.state]

    @property
    def uptime_text(self) -> str:
        return uptime_text(self.uptime)


@dataclass(frozen=True)
class PublicIncident:
    label: str
    opened_at: datetime
    resolved_at: datetime | None
    ongoing: bool
    acknowledged: bool

    @property
    def title(self) -> str:
        # Built from the chosen label: the incident's own title names the monitor.
        return f"{self.label} is down" if self.ongoing else f"{self.label} was down"

    @property
    def status_text(self) -> str:
        if self.acknowledged:
            return "Ongoing, being worked on"
        return "Ongoing" if self.ongoing else "Resolved"

    @property
    def minutes(self) -> int | None:
        if self.resolved_at is None:
            return None
        return max(1, round((self.resolved_at - self.opened_at).total_seconds() / 60))


@dataclass(frozen=True)
class Notice:
    name: str
    starts_at: datetime
    ends_at: datetime
    active: bool
    recurring: bool
    labels: list[str]  # empty: every service on the page
    item_ids: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Overall:
    key: str
    text: str


@dataclass(frozen=True)
class PublicPage:
    title: str
    intro: str
    slug: str
    show_incidents: bool
    overall: Overall
    items: list[PublicItem]
    notices: list[Notice]
    incidents: list[PublicIncident]
    bar_width: int


def build(page: StatusPage, now: datetime) -> PublicPage:
    items = list(chosen_items(page))
    by_source = {source(i.monitor): i for i in items}
    notices = maintenance_notices(page.org_id, by_source, now)
    days = bar_days(now)
    ids = [i.monitor_id for i in items]
    daily = daily_uptimes(ids, days[0], days[-1] + timedelta(days=1))
    totals = rollups.uptime_percents(ids, days[0], now)
    shown = [
        PublicItem(
            id=i.pk,
            label=i.label,
            state=public_state(i.monitor, in_maintenance(i.pk, notices)),
            bars=[
                Bar(day=d, uptime=daily.get((i.monitor_id, d)), x=n * SLOT)
                for n, d in enumerate(days)
            ],
            uptime=totals[i.monitor_id],
        )
        for i in items
    ]
    history = incident_history(page.org_id, by_source, now) if page.show_incidents else []
    return PublicPage(
        title=page.title,
        intro=page.intro,
        slug=page.slug,
        show_incidents=page.show_incidents,
        overall=overall([i.state for i in shown]),
        items=shown,
        notices=notices,
        incidents=history,
        bar_width=len(days) * SLOT - (SLOT - BAR),
    )


def chosen_items(page: StatusPage) -> list[StatusPageItem]:
    # Only the monitor fields the page needs: its name, config and errors stay unloaded.
    fields = ["label", "position", "page", "monitor", "monitor__state", "monitor__enabled"]
    return list(page.items.select_related("monitor").only(*fields))


def public_state(monitor: Monitor, maintenance: bool) -> str:
    """up, down, pending (not checked yet, or failing but not confirmed), paused or
    maintenance (a public window covers it now)."""
    if maintenance:
        return "maintenance"
    if not monitor.enabled or monitor.state == State.PAUSED:
        return "paused"
    return str(monitor.state)


def in_maintenance(item_id: int, notices: list[Notice]) -> bool:
    return any(n.active and item_id in n.item_ids for n in notices)


def overall(states: list[str]) -> Overall:
    watched = [s for s in states if s != "paused"]
    down = watched.count("down")
    if down and down == len(watched):
        return Overall("major", "Major outage")
    if down:
        return Overall("partial", "Partial outage")
    if "maintenance" in watched:
        return Overall("maintenance", "Maintenance in progress")
    if "up" in watched:
        return Overall("operational", "All systems operational")
    return Overall("unknown", "Status not known yet")


# --- uptime bars --------------------------------------------------------------------------


def bar_days(now: datetime, count: int = BAR_DAYS) -> list[datetime]:
    """The starts of the last `count` days up to today, in onwatch's zone (the zone the
    daily rollups were made in), oldest first."""
    zone = timezone.get_default_timezone()
    today = timezone.localtime(now, zone).date()
    first = timezone.make_aware(datetime.combine(today - timedelta(days=count - 1), time()), zone)
    tomorrow = rollups.next_day(rollups.floor_day(now))
    return list(rollups.day_starts(first, tomorrow))


def daily_uptimes(
    monitor_ids: list[int], since: datetime, until: datetime
) -> dict[tuple[int, datetime], float | None]:
    """Uptime per (monitor, day) from the daily rollups, for every monitor in one query."""
    rows = Rollup.objects.filter(
        monitor_id__in=monitor_ids, period=Rollup.DAY, start__gte=since, start__lt=until
    ).values_list("monitor_id", "start", "checks", "failures")
    return {(m, start): rollups.percent(checks, failures) for m, start, checks, failures in rows}


# --- incidents and maintenance ------------------------------------------------------------


def incident_history(
    org_id: int, by_source: dict[str, StatusPageItem], now: datetime
) -> list[PublicIncident]:
    """The page's monitors' incidents of the last INCIDENT_DAYS, and any still open."""
    since = now - timedelta(days=INCIDENT_DAYS)
    return [
        PublicIncident(
            label=by_source[i.source].label,
            opened_at=i.opened_at,
            resolved_at=i.resolved_at,
            ongoing=i.ongoing,
            acknowledged=i.acknowledged,
        )
        for i in incident_facts(org_id, list(by_source), since, INCIDENT_LIMIT)
    ]


def maintenance_notices(
    org_id: int, by_source: dict[str, StatusPageItem], now: datetime
) -> list[Notice]:
    """Public windows covering any of the page's monitors (or everything), in progress or
    starting within MAINTENANCE_AHEAD, soonest first."""
    notices = []
    for w in public_windows(org_id, now, MAINTENANCE_AHEAD):
        covered = [by_source[s] for s in w.sources if s in by_source]
        if w.sources and not covered:
            continue
        items = covered or list(by_source.values())
        notices.append(
            Notice(
                name=w.name,
                starts_at=w.start,
                ends_at=w.end,
                active=w.start <= now < w.end,
                recurring=w.recurring,
                labels=[i.label for i in sorted(covered, key=lambda i: (i.position, i.pk))],
                item_ids=frozenset(i.pk for i in items),
            )
        )
    return sorted(notices, key=lambda n: (n.starts_at, n.name))


# --- one item, for badges -----------------------------------------------------------------


def item_state(item: StatusPageItem, now: datetime) -> str:
    notices = maintenance_notices(item.page.org_id, {source(item.monitor): item}, now)
    return public_state(item.monitor, in_maintenance(item.pk, notices))


def item_uptime(item: StatusPageItem, now: datetime, days: int = BADGE_DAYS) -> float | None:
    return rollups.uptime_percent(item.monitor, now - timedelta(days=days), now)
