"""History that stays small: raw check results become hourly and daily aggregates.

`run(now)` is idempotent and incremental: it recomputes, from the raw results, the hours
from the newest hourly rollup (less an hour, for results written late) up to `now`, then
the days those hours fall in from the hourly rows, and ages out what is old. Raw results
are kept 48 hours (and never deleted before they are rolled up), hourly rollups 90 days,
daily ones two years. Uptime and response times are read from the rollups, except for
the last hours, which the job may not have rolled yet (it runs once an hour): those come
from the raw results of the monitors asked about, through their (monitor, at) index. So a
new monitor shows its first checks at once, and a page never scans more than two hours of
raw rows per monitor.

Hours are UTC hours; days are days in onwatch's time zone (ONWATCH_TIME_ZONE). Response
times count successful checks only: a refused connection has no response time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from onwatch.uptime.models import CheckResult, Monitor, Rollup

HOUR, DAY = Rollup.HOUR, Rollup.DAY
RAW_KEPT = timedelta(hours=48)
HOURLY_KEPT = timedelta(days=90)
DAILY_KEPT = timedelta(days=2 * 366)
# Results can land after their hour was rolled (the prober writes once a second, and a
# check's time is when it started): the hour before the newest rollup is done again.
LATE = timedelta(hours=1)
DELETE_CHUNK = 5000
TOTALS = ("checks", "failures", "latency_sum_ms", "latency_max_ms")


def run(now: datetime) -> dict[str, int]:
    since = start_of_work(now)
    hours = list(hour_starts(since, now))
    rolled_hours = sum(roll_hour(h) for h in hours)
    rolled_days = sum(roll_day(d) for d in day_starts(since, now))
    pruned = prune(now, rolled_before=hours[0] if hours else floor_hour(now))
    return {"hours": rolled_hours, "days": rolled_days, **pruned}


def start_of_work(now: datetime) -> datetime:
    newest = Rollup.objects.filter(period=HOUR).aggregate(at=Max("start"))["at"]
    if newest is not None:
        return floor_hour(min(newest - LATE, now))
    oldest = CheckResult.objects.aggregate(at=Min("at"))["at"]
    return floor_hour(oldest or now)


# --- time buckets ------------------------------------------------------------------------


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(at: datetime) -> datetime:
    # onwatch's zone, never the one a request may have activated for its reader: the
    # days must be the same ones the rollups were made for.
    zone = timezone.get_default_timezone()
    local = timezone.localtime(at, zone).replace(tzinfo=None)
    return timezone.make_aware(local.replace(hour=0, minute=0, second=0, microsecond=0), zone)


def next_day(day: datetime) -> datetime:
    # Through the calendar, not +24 h: days around a DST change are 23 or 25 hours long.
    zone = timezone.get_default_timezone()
    local = timezone.localtime(day, zone).replace(tzinfo=None) + timedelta(days=1)
    return timezone.make_aware(local, zone)


def hour_starts(since: datetime, until: datetime) -> Iterator[datetime]:
    hour = floor_hour(since)
    while hour < until:
        yield hour
        hour += timedelta(hours=1)


def day_starts(since: datetime, until: datetime) -> Iterator[datetime]:
    day = floor_day(since)
    while day < until:
        yield day
        day = next_day(day)


# --- rolling up -------------------------------------------------------------------------


def roll_hour(start: datetime) -> int:
    """Recompute every monitor's rollup of one hour from the raw results."""
    end = start + timedelta(hours=1)
    return upsert(HOUR, start, raw_totals(CheckResult.objects.filter(at__gte=start, at__lt=end)))


def raw_totals(results: QuerySet[CheckResult]) -> QuerySet[Any]:
    """Per monitor: checks, failures and the response times of those that passed."""
    ok = Q(ok=True)
    return (
        results.values("monitor_id")
        .order_by()
        .annotate(
            checks=Count("id"),
            failures=Count("id", filter=Q(ok=False)),
            latency_sum_ms=Sum("latency_ms", filter=ok),
            latency_max_ms=Max("latency_ms", filter=ok),
        )
    )


def roll_day(start: datetime) -> int:
    """Recompute every monitor's rollup of one day from its hourly rollups."""
    rows = (
        Rollup.objects.filter(period=HOUR, start__gte=start, start__lt=next_day(start))
        .values("monitor_id")
        .annotate(
            checks=Sum("checks"),
            failures=Sum("failures"),
            latency_sum_ms=Sum("latency_sum_ms"),
            latency_max_ms=Max("latency_max_ms"),
        )
    )
    return upsert(DAY, start, rows)


def upsert(period: str, start: datetime, rows: Iterable[Mapping[str, Any]]) -> int:
    rollups = [
        Rollup(
            monitor_id=row["monitor_id"],
            period=period,
            start=start,
            **{name: row[name] or 0 for name in TOTALS},
        )
        for row in rows
    ]
    Rollup.objects.bulk_create(
        rollups,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["monitor", "period", "start"],
        update_fields=list(TOTALS),
    )
    return len(rollups)


# --- ageing out ---------------------------------------------------------------------------


def prune(now: datetime, rolled_before: datetime) -> dict[str, int]:
    # Raw results not rolled up yet stay, however old (the job may not have run for days).
    raw_cutoff = min(now - RAW_KEPT, rolled_before)
    return {
        "raw_deleted": delete_in_chunks(CheckResult.objects.filter(at__lt=raw_cutoff)),
        "hourly_deleted": delete_in_chunks(
            Rollup.objects.filter(period=HOUR, start__lt=now - HOURLY_KEPT)
        ),
        "daily_deleted": delete_in_chunks(
            Rollup.objects.filter(period=DAY, start__lt=now - DAILY_KEPT)
        ),
    }


def delete_in_chunks(rows: QuerySet[Any]) -> int:
    """Delete in short transactions: on SQLite a long one would hold up the prober."""
    deleted = 0
    while ids := list(rows.values_list("id", flat=True)[:DELETE_CHUNK]):
        deleted += rows.model.objects.filter(id__in=ids).delete()[0]
    return deleted


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    start: datetime
    checks: int
    failures: int
    latency_avg_ms: float | None  # of successful checks
    latency_max_ms: int | None

    @property
    def uptime(self) -> float | None:
        """Percent of checks that passed; None when there were none."""
        return percent(self.checks, self.failures)


def percent(checks: int, failures: int) -> float | None:
    return None if checks == 0 else 100.0 * (checks - failures) / checks


def fresh_from(now: datetime) -> datetime:
    """From here on, results are read raw: the hour in progress and the one before it,
    which the hourly job (at minute 7) may not have rolled up, or only in part."""
    return floor_hour(now) - LATE


def series(monitor: Monitor, since: datetime, until: datetime, period: str = HOUR) -> list[Point]:
    """The hourly (or daily) points that start within [since, until), oldest first: for
    response-time charts and uptime bars. The fresh hours (and the days they fall in) are
    counted from the raw results."""
    fresh = fresh_from(timezone.now())
    rolled_until = min(until, fresh if period == HOUR else floor_day(fresh))
    rows = Rollup.objects.filter(
        monitor=monitor, period=period, start__gte=since, start__lt=rolled_until
    ).order_by("start")
    found = [to_point(r) for r in rows]
    starts = hour_starts if period == HOUR else day_starts
    for start in starts(max(since, rolled_until), until):
        point = recent_point(monitor, start, period, fresh)
        if point.checks:
            found.append(point)
    return found


def recent_point(monitor: Monitor, start: datetime, period: str, fresh: datetime) -> Point:
    """One period that is not (wholly) rolled up: the rolled hours before `fresh`, the raw
    results after."""
    end = start + timedelta(hours=1) if period == HOUR else next_day(start)
    rows: list[Mapping[str, Any]] = []
    if start < fresh:
        hours = Rollup.objects.filter(monitor=monitor, period=HOUR, start__gte=start)
        rows.append(
            hours.filter(start__lt=min(end, fresh)).aggregate(
                checks=Sum("checks"),
                failures=Sum("failures"),
                latency_sum_ms=Sum("latency_sum_ms"),
                latency_max_ms=Max("latency_max_ms"),
            )
        )
    raw = CheckResult.objects.filter(monitor=monitor, at__gte=max(start, fresh), at__lt=end)
    rows += raw_totals(raw)
    return to_point(Rollup(monitor=monitor, period=period, start=start, **summed(rows)))


def summed(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    totals = {name: 0 for name in TOTALS}
    for row in rows:
        for name in ("checks", "failures", "latency_sum_ms"):
            totals[name] += row[name] or 0
        totals["latency_max_ms"] = max(totals["latency_max_ms"], row["latency_max_ms"] or 0)
    return totals


def to_point(r: Rollup) -> Point:
    passed = r.checks - r.failures
    return Point(
        start=r.start,
        checks=r.checks,
        failures=r.failures,
        latency_avg_ms=r.latency_sum_ms / passed if passed else None,
        latency_max_ms=r.latency_max_ms if passed else None,
    )


def uptime_percent(monitor: Monitor, since: datetime, until: datetime) -> float | None:
    """Percent of checks in [since, until) that passed, to the hour; None if none ran."""
    return uptime_percents([monitor.pk], since, until).get(monitor.pk)


def uptime_percents(
    monitor_ids: list[int], since: datetime, until: datetime
) -> dict[int, float | None]:
    """uptime_percent for many monitors in two queries (a list of 10,000 stays fast).

    Whole days come from the daily rollups, the ragged ends from the hourly ones, the
    fresh hours from the raw results.
    """
    fresh = max(since, min(until, fresh_from(timezone.now())))
    rows = list(rolled_totals(monitor_ids, since, fresh)) if since < fresh else []
    return percents_of(monitor_ids, rows + fresh_totals(monitor_ids, fresh, until))


def uptime_spans(
    monitor_ids: list[int], starts: list[datetime], until: datetime
) -> list[dict[int, float | None]]:
    """uptime_percents from each of `starts` to `until`, the fresh hours read once for all."""
    fresh = min(until, fresh_from(timezone.now()))
    if any(since > fresh for since in starts):
        return [uptime_percents(monitor_ids, since, until) for since in starts]
    raw = fresh_totals(monitor_ids, fresh, until)
    return [
        percents_of(
            monitor_ids,
            [*(rolled_totals(monitor_ids, since, fresh) if since < fresh else []), *raw],
        )
        for since in starts
    ]


def fresh_totals(monitor_ids: list[int], since: datetime, until: datetime) -> list[Any]:
    if since >= until:
        return []
    results = CheckResult.objects.filter(monitor_id__in=monitor_ids)
    return list(raw_totals(results.filter(at__gte=since, at__lt=until)))


def percents_of(monitor_ids: list[int], rows: list[Any]) -> dict[int, float | None]:
    """Each monitor's uptime from rows of checks and failures (several rows a monitor)."""
    counted: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        counted.setdefault(row["monitor_id"], []).append(row)
    found: dict[int, float | None] = dict.fromkeys(monitor_ids)
    for pk, mine in counted.items():
        found[pk] = percent(sum(r["checks"] for r in mine), sum(r["failures"] for r in mine))
    return found


def rolled_totals(monitor_ids: list[int], since: datetime, until: datetime) -> QuerySet[Any]:
    """Checks and failures per monitor in [since, until), from the rollups only."""
    first_day = floor_day(since)
    if first_day < since:
        first_day = next_day(first_day)
    last_day = floor_day(until)
    if first_day >= last_day:
        first_day = last_day = floor_hour(since)
    hours = Q(start__gte=floor_hour(since), start__lt=first_day) | Q(
        start__gte=last_day, start__lt=until
    )
    # The hours lie outside the whole days, so nothing is counted twice.
    picked = (Q(period=HOUR) & hours) | Q(period=DAY, start__gte=first_day, start__lt=last_day)
    return (
        Rollup.objects.filter(picked, monitor_id__in=monitor_ids)
        .values("monitor_id")
        .annotate(checks=Sum("checks"), failures=Sum("failures"))
    )
