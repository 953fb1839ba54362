"""The watch of a release after its deploy: for the service's watch window, its answers
are compared with those of the release before it, both as Caddy logged them (caddy.py's
request log, kept on from just before the switch: before the switch it holds the old release's
answers; after it, the new one's). The baseline is what the release before answered while it
served: in its own watch window after its switch (kept on its row when that ended: minutes of
traffic, where the seconds before a switch are often a handful of requests) and just before
each later switch, this one's included. A baseline of fewer requests than a release needs to
be judged proves nothing: the thresholds alone then judge. When the new release is clearly worse,
onwatch makes the previous one live again through the same gated switch (a rollback
deploy), opens an incident and alerts with the evidence; a release marked "no rollback past
this" is not rolled back, and the incident says why.

A service on SSH hosts is watched on every host: each host's Caddy counts there, the agent
reads its log and sends it summed by second and slot, with its own now (places.py's
counting methods), and the release is judged on the sum, timed by this machine's clock (a
host whose clock is off would bend the windows; over SKEW_SAID it is said); the evidence
says what each host answered, and which could not be read. A watch that can read
no host for UNREAD_SECONDS ends "not judged", saying why: never "passed" on no data.

The watch is a short job that looks once and goes back to the queue (WaitLater), so it
holds no worker's slot between looks; what it counted and how far it read the log are on
its row, so it goes on where it was after onwatch restarts."""

from __future__ import annotations

import dataclasses
import fcntl
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.urls import reverse
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.services import alert_channels
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.deploys import caddy, hosts, places, remote, services
from onwatch.deploys.agent import Sum, summed
from onwatch.deploys.models import (
    ENDED,
    Deploy,
    Host,
    Release,
    Service,
    State,
    Watch,
    WatchState,
)
from onwatch.deploys.switch import Machine

# Between two looks: a release that starts failing is found within a few of them.
LOOK_SECONDS = 1.0
# The recent answers judged besides all since the switch: a release that fails after
# serving well for minutes is caught within about this long.
RECENT_SECONDS = 30.0
# How long the watch waits for the rollback it asked for before it alerts anyway.
ROLLBACK_WAIT_SECONDS = 120.0


@dataclass
class Counts:
    """Answers of one release: how many, how many 5xx, and the seconds they took."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0

    def add(self, part: Sum) -> None:
        self.requests += part.requests
        self.errors += part.errors
        self.seconds += part.seconds

    @property
    def share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def said(self) -> str:
        """ "0.4 % of 250 requests", latency apart."""
        return f"{percent(self.share)} of {self.requests:,} requests"

    @property
    def mean_ms(self) -> float:
        return self.seconds * 1000 / self.requests if self.requests else 0.0

    def latency(self) -> str:
        return f"{self.mean_ms:.0f} ms"


def percent(share: float) -> str:
    value = share * 100
    # 9.96 % is "10 %", not "10.0 %": decimals only below what rounds to 10.
    text = f"{value:.0f}" if value >= 9.95 or value == 0 else f"{value:.1f}"
    return f"{text} %"


def counted(sums: Iterable[Sum]) -> Counts:
    counts = Counts()
    for part in sums:
        counts.add(part)
    return counts


def of_release(answers: Iterable[caddy.Answer], upstream: str, live_at: float) -> Counts:
    return counted(mine(summed(answers), upstream, live_at))


def mine(sums: Iterable[Sum], upstream: str, live_at: float) -> list[Sum]:
    """The answers that are the watched release's: those of its slot, and those Caddy made
    itself once it was live, when no slot or its own was tried (the old slot's failures
    while it drained are not the new release's)."""
    return [s for s in sums if _its_own(s, upstream, live_at)]


def _its_own(part: Sum, upstream: str, live_at: float) -> bool:
    # Summed by the second: Caddy's own answers of the second it went live in are left
    # out (an old release's 502 counted against the new one could roll it back wrongly).
    return part.upstream == upstream or (part.made and part.second >= live_at)


# Which rule found a release clearly worse: the evidence and the incident say it.
ERRORS, SLOW = "errors", "slow"


def clearly_worse(now: Counts, base: Counts | None, service: Service) -> bool:
    return worse_by(now, base, service) is not None


def worse_by(now: Counts, base: Counts | None, service: Service) -> str | None:
    """With enough requests: errors (a share over the service's threshold and over so many
    times the share of the release before it) first, else slowness. (Once error tracking
    exists, its rate of new errors of the release joins here, read through
    errors.services.)"""
    if now.requests < service.watch_min_requests:
        return None
    base = worth(base, service)
    over = now.share * 100 > service.watch_error_percent
    if over and now.share > service.watch_error_factor * (base.share if base else 0.0):
        return ERRORS
    return SLOW if slower(now, base, service) else None


def worth(base: Counts | None, service: Service) -> Counts | None:
    """The baseline when there is enough of it to compare with: as many requests as a release
    needs to be judged (1 error in 8 requests would raise the bar to 38 %); else None, and
    the thresholds alone judge."""
    return base if base is not None and base.requests >= service.watch_min_requests else None


def slower(now: Counts, base: Counts | None, service: Service) -> bool:
    """Mean latency over the floor and over so many times the release before it's. The mean,
    as the watch keeps running sums on its row (it goes on after a restart): a p95 would
    need every answer's time kept. The floor keeps 2 ms -> 7 ms from counting; without a
    baseline it never counts, as an app may be slow by nature (errors need no baseline)."""
    if not service.watch_latency_factor or base is None or not base.requests:
        return False
    over_floor = now.mean_ms > service.watch_latency_ms
    return over_floor and now.mean_ms > service.watch_latency_factor * base.mean_ms


def recent_after(recent: list[list[float]], sums: Iterable[Sum], now: float) -> list[list[float]]:
    """The recent window (Watch.recent) with `sums` added and what started more than
    RECENT_SECONDS before `now` left out."""
    buckets = {int(b[0]): list(b) for b in recent}
    for s in sums:
        second = int(s.second)
        b = buckets.setdefault(second, [second, 0, 0, 0.0])
        b[1], b[2], b[3] = b[1] + s.requests, b[2] + s.errors, b[3] + s.seconds
    return [b for s, b in sorted(buckets.items()) if s > now - RECENT_SECONDS]


def recent_of(watch: Watch) -> Counts:
    r = watch.recent
    return Counts(int(sum(b[1] for b in r)), int(sum(b[2] for b in r)), sum(b[3] for b in r))


def base_of(watch: Watch) -> Counts | None:
    if watch.base_requests is None:
        return None
    return Counts(watch.base_requests, watch.base_errors or 0, watch.base_seconds or 0.0)


def now_of(watch: Watch) -> Counts:
    return Counts(watch.requests, watch.errors, watch.seconds)


# --- what is said ----------------------------------------------------------------------------


def label_of(watch: Watch) -> str:
    release = watch.deploy.release
    return release.label if release else f"the release of deploy #{watch.deploy_id}"


def previous_label(watch: Watch) -> str:
    return watch.previous.label if watch.previous else "the release before it"


def watched_seconds(watch: Watch) -> float:
    since = watch.deploy.switched_at or watch.started_at
    return max(0.0, (timezone.now() - since).total_seconds())


def comparison(watch: Watch) -> str:
    """What the watch saw, led by the rule that fired: slowness, or else errors; then, on
    several hosts, what each answered."""
    if worse_by(now_of(watch), base_of(watch), watch.deploy.service) == SLOW:
        said = slowness(watch)
    else:
        said = error_share(watch)
    return f"{said}; by host: {by_host(watch)}{skews(watch)}" if watch.hosts else said


def skews(watch: Watch) -> str:
    return "".join(f"; {said}" for h in watch.hosts if (said := skew_said(h)))


def by_host(watch: Watch) -> str:
    """ "deploy@b: 31 of 140 answers 5xx, 12 ms on average; deploy@c: could not be read
    (…)": each host's own part of the evidence."""
    return "; ".join(host_said(h) for h in watch.hosts)


def host_said(host: dict[str, Any]) -> str:
    name, why = host["name"], host["unread"]
    if not host["upstream"]:
        return f"{name}: not counted ({why})"
    counts = Counts(host["requests"], host["errors"], host["seconds"])
    said = f"{name}: {counts.errors:,} of {counts.requests:,} answers 5xx"
    said += f", {counts.latency()} on average" if counts.requests else ""
    if not why:
        return said
    if not counts.requests:
        return f"{name}: could not be read ({why})"
    return f"{said}, then it could not be read ({why})"


def slowness(watch: Watch) -> str:
    """ "release 7 took 850 ms on average to answer 130 requests in its first 40 s, 71
    times as long as release 6, which took 12 ms for 12,312 requests over 5 min (…); 0 %
    of its answers were errors"."""
    now, base = now_of(watch), base_of(watch) or Counts()
    times = now.mean_ms / base.mean_ms if base.mean_ms else 0.0
    return (
        f"{label_of(watch)} took {now.latency()} on average to answer {now.requests:,} "
        f"requests in its first {watched_seconds(watch):.0f} s, {times:.0f} times as long as "
        f"{previous_label(watch)}, which took {base.latency()} for {base.requests:,} requests "
        f"over {span_of(watch)} ({composition(watch)}); {percent(now.share)} of its answers "
        "were errors"
    )


def error_share(watch: Watch) -> str:
    """ "release 7 answered 23 % of 130 requests with errors in its first 40 s, against
    0.4 % of 12,312 requests over 5 min for release 6: 22 in the 6 s just before this
    switch and the rest kept from when it served before; its answers took 12 ms on average
    (11 ms before)"."""
    now, base = now_of(watch), worth(base_of(watch), watch.deploy.service)
    took = f"its answers took {now.latency()} on average" if now.requests else ""
    if took and base is not None:
        took += f" ({base.latency()} before)"
    return (
        f"{label_of(watch)} answered {now.said()} with errors in its first "
        f"{watched_seconds(watch):.0f} s, {against(watch)}" + (f"; {took}" if took else "")
    )


def against(watch: Watch) -> str:
    """What the release is judged against, saying how much of it there was."""
    base, service = base_of(watch), watch.deploy.service
    if (worthy := worth(base, service)) is not None:
        return (
            f"against {worthy.said()} over {span_of(watch)} for {previous_label(watch)}: "
            f"{composition(watch)}"
        )
    alone = "against the thresholds alone, as"
    if base is None or not base.requests:
        return (
            f"{alone} no answer of {previous_label(watch)} was counted to compare with "
            f"({none_counted(watch)})"
        )
    return (
        f"{alone} {previous_label(watch)} answered only {base.requests:,} requests to compare "
        f"with (at least {service.watch_min_requests} are needed): {composition(watch)}"
    )


def before_switch(watch: Watch) -> tuple[int, float]:
    """The baseline's requests and seconds counted just before this switch; the rest was
    kept on the release's row."""
    kept, kept_span = watch.base_kept_requests or 0, watch.base_kept_span or 0.0
    return (watch.base_requests or 0) - kept, max(0.0, (watch.base_span or 0.0) - kept_span)


def composition(watch: Watch) -> str:
    """Where the baseline's requests were counted."""
    requests, seconds = before_switch(watch)
    just = f"in the {span_text(seconds)} just before this switch"
    if watch.base_span is None:
        return "all just before this switch"  # a watch from before onwatch kept more
    if watch.base_kept_requests is None:
        return f"all {just}, as it was never watched"
    if not watch.base_kept_requests:
        return f"all {just}, none while it was watched"
    if not requests:
        return f"all kept from when it served before, none {just}"
    return f"{requests:,} {just} and the rest kept from when it served before"


def none_counted(watch: Watch) -> str:
    if watch.base_requests is None:
        return "Caddy could not count it before this switch"
    none = f"none in the {span_text(before_switch(watch)[1])} just before this switch"
    if watch.base_kept_requests is None:
        return f"{none}, and it was never watched"
    return f"{none}, nor while it was watched"


def span_of(watch: Watch) -> str:
    return span_text(watch.base_span) if watch.base_span is not None else "an unknown time"


def span_text(seconds: float) -> str:
    """ "6 s", "5 min", "3 h 20 min": how long, as a person says it."""
    whole = round(seconds)
    if whole < 100:
        return f"{whole} s"
    minutes = round(seconds / 60)
    if minutes < 100:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def tally_said(release: Release) -> str:
    """What a release answered while it served, as its row keeps it (the baseline of the
    release deployed after it)."""
    tally = services.tally_of(release)
    if tally is None:
        return "its answers were never counted (it was never watched)"
    counts = Counts(tally.requests, tally.errors, tally.seconds)
    took = f", {counts.latency()} on average" if counts.requests else ""
    return f"answered {counts.said()} with errors over {span_text(tally.span)} while counted" + took


def at(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%H:%M:%S} UTC" if moment else "an unknown time"


def said(watch: Watch) -> str:
    """The watch in one line for its deploy's page: how far it is, or how it ended."""
    if watch.state == WatchState.WATCHING:
        away = "".join(f"; {h['name']} cannot be read now" for h in watch.hosts if h["unread"])
        return (
            f"watching until {at(watch.until)}: {watch.requests:,} requests answered so far, "
            f"{watch.errors:,} of them errors{away}{skews(watch)}"
        )
    verdict = watch.verdict or "no verdict was kept"
    return verdict if verdict.startswith(watch.state) else f"{watch.state}: {verdict}"


# --- one look --------------------------------------------------------------------------------


def look(watch: Watch, machine: Machine, lock: Path) -> bool:
    """Read what Caddy logged since the last look and judge; True when the watch goes on.
    A look that fails ends the watch, saying why, and alerts: a watch that stopped must
    not look like one that still guards the release."""
    try:
        return _look_held(watch, machine, lock)
    except Exception as e:
        stopped(watch, machine, lock, f"onwatch's watch failed: {type(e).__name__}: {e}")
        alert_stopped(watch)
        raise


def stopped(watch: Watch, machine: Machine, lock: Path, why: str) -> None:
    """The watch ends now, not judged, and Caddy's count stops if it is the watch's (no
    deploy holds the lock, and none began since the watch's count did)."""
    with lock.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a deploy runs: the count is its own
        else:
            if not services.deploys_since(watch) and watch.deploy.service.domain:
                stop_all(watch, machine)
    watch.refresh_from_db()
    if watch.state in (WatchState.WATCHING, WatchState.ROLLING_BACK):
        _unjudged(watch, why)


def alert_stopped(watch: Watch) -> None:
    service = watch.deploy.service
    alert_channels(
        services.channels_hearing(service.pk),
        title=f"The watch of {label_of(watch)} of {service.name} stopped",
        body="\n".join(
            [
                f"What happened: {watch.verdict}",
                "onwatch no longer watches this release, and will not roll it back by itself.",
                "What to do: check that the site answers well; if it does not, roll back by "
                f"hand (onwatch rollback {service.name}).",
            ]
        ),
        link=reverse("deploy_detail", args=[watch.deploy_id]),
    )


def _look_held(watch: Watch, machine: Machine, lock: Path) -> bool:
    """Only under the service's deploy lock, and only while no other deploy began since
    the watch's count did: the count is then the watch's own to read and stop."""
    if watch.state == WatchState.ROLLING_BACK:
        return follow_rollback(watch)
    with lock.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # a deploy runs: the count is its own until it ends
        # Another look (one reaped past its lease) may have judged meanwhile.
        watch.refresh_from_db()
        if watch.state != WatchState.WATCHING:
            return watch.state == WatchState.ROLLING_BACK
        if others := services.deploys_since(watch):
            return _after(watch, machine, others[0])
        return _look_hosts(watch, machine) if watch.hosts else _look(watch, machine)


def _after(watch: Watch, machine: Machine, other: Deploy) -> bool:
    """Another deploy began: once it made its release live, the watch has ended; until it
    has ended, the watch waits; if it ended without a switch, the watched release still
    serves and is watched on, from a count started again."""
    if other.switched_at is not None:
        services.watch_ended(
            watch,
            WatchState.REPLACED,
            f"ended early, as {other.kind} #{other.pk} began: {comparison(watch)}",
        )
        return False
    if other.state not in ENDED:
        return True
    try:
        start_again(watch, machine)
    except (caddy.CaddyError, OSError, places.PlaceError) as e:
        return _unjudged(
            watch,
            f"Caddy's count could not start again after {other.kind} "
            f"#{other.pk} ended without a switch: {e}",
        )
    services.watch_counting_again(watch)
    return True


def start_again(watch: Watch, machine: Machine) -> None:
    """Caddy's count of the site from now, on this machine or on every host of the watch
    (a host that cannot start it is read as one that cannot be read; PlaceError: none)."""
    domain = watch.deploy.service.domain
    if not watch.hosts:
        machine.caddy.start_counting(domain)
        return
    failed: list[str] = []
    for host in watch.hosts:
        if host["upstream"]:
            try:
                place_at(watch, host, machine).start_counting(domain)
            except places.PlaceError as e:
                failed.append(str(e))
    if len(failed) == len([h for h in watch.hosts if h["upstream"]]):
        raise places.PlaceError("; ".join(failed) or "no host was counted")


def _look(watch: Watch, machine: Machine) -> bool:
    domain = watch.deploy.service.domain
    first_step(watch)
    if not domain or not machine.caddy.counting(domain):
        return _unjudged(watch, "Caddy stopped counting the site's requests")
    try:
        answers, offset = machine.caddy.counted_from(domain, watch.offset)
    except caddy.CaddyError as e:
        stop_counting(machine, domain)
        return _unjudged(watch, str(e))
    live_at = (watch.deploy.switched_at or watch.started_at).timestamp()
    its = mine(summed(answers), watch.upstream, live_at)
    new, now = counted(its), now_of(watch)
    services.watch_counted(
        watch,
        now.requests + new.requests,
        now.errors + new.errors,
        now.seconds + new.seconds,
        offset,
        recent_after(watch.recent, its, time.time()),
    )
    return _judge(watch, lambda: stop_counting(machine, domain))


def first_step(watch: Watch) -> None:
    """The "watch" step of the timeline, said once, at the first look."""
    if any(s["name"] == "watch" for s in watch.deploy.steps):
        return
    where = f" on {len(watch.hosts)} hosts" if len(watch.hosts) > 1 else ""
    services.watch_step(
        watch,
        f"watching the answers of {label_of(watch)}{where} until {at(watch.until)}, "
        f"{judged_against(watch)}",
    )


def _judge(watch: Watch, stop: Callable[[], None]) -> bool:
    """Judge what was counted so far; `stop` ends Caddy's count once the watch has ended."""
    service, base = watch.deploy.service, base_of(watch)
    late = recent_of(watch)
    if clearly_worse(now_of(watch), base, service) or clearly_worse(late, base, service):
        stop()
        total_worse = clearly_worse(now_of(watch), base, service)
        act(watch, "" if total_worse else lately(late, worse_by(late, base, service)))
        return watch.state == WatchState.ROLLING_BACK
    if timezone.now() < watch.until:
        return True
    stop()
    judged(watch)
    return False


# --- every host of a service on SSH hosts ----------------------------------------------------

# A watch that can read none of its hosts for this long ends, not judged: it no longer
# guards the release, and people hear so (a host away for a look or two is waited for).
UNREAD_SECONDS = 10.0
# Each host's connection is kept between looks, one per watch (its looks come one at a
# time; a link answers one request at a time): a read on it takes under a millisecond, a
# new ssh sign-in and agent start about a second (bench/autorollback.py --ssh). One no
# look used for this long is closed (its watch ended, perhaps in another worker).
LINK_IDLE_SECONDS = 30.0
_links: dict[tuple[int, int], tuple[places.Place, float]] = {}


def host_entry(host: Host, name: str, upstream: str, why: str = "") -> dict[str, Any]:
    """One host of a watch (Watch.hosts): `upstream` its new release's slot there, or ""
    when Caddy could not count there (`why`)."""
    return {
        "host": host.pk,
        "name": name,
        "upstream": upstream,
        "offset": 0,
        "requests": 0,
        "errors": 0,
        "seconds": 0.0,
        "unread": why,
        "unread_since": None,
        "skew": 0.0,
    }


def _look_hosts(watch: Watch, machine: Machine) -> bool:
    """Every host's answers since the last look, summed; judged on what could be read."""
    first_step(watch)
    live_at = (watch.deploy.switched_at or watch.started_at).timestamp()
    rows, its = [dict(h) for h in watch.hosts], list[Sum]()
    for host in rows:
        if host["upstream"]:
            its += read_host(watch, host, machine, live_at)
    new, now = counted(its), now_of(watch)
    services.watch_counted(
        watch,
        now.requests + new.requests,
        now.errors + new.errors,
        now.seconds + new.seconds,
        watch.offset,
        recent_after(watch.recent, its, time.time()),
        rows,
    )
    close_idle_links()
    if unread_too_long(watch):
        stop_all(watch, machine)
        _unjudged(watch, f"no host could be read for {UNREAD_SECONDS:g} s: {unread(watch)}")
        alert_stopped(watch)
        return False
    return _judge(watch, lambda: stop_all(watch, machine))


def read_host(watch: Watch, host: dict[str, Any], machine: Machine, live_at: float) -> list[Sum]:
    """The release's answers the host's Caddy logged since the last read, added to the
    host's counts; none when it cannot be read, which it then says (`unread`)."""
    domain = watch.deploy.service.domain
    try:
        place = place_at(watch, host, machine)
        if not place.counting(domain):
            raise places.PlaceError("Caddy there stopped counting the site's requests")
        asked = time.time()
        found = place.counted_from(domain, int(host["offset"]))
    except places.PlaceError as e:
        host["unread"] = " ".join(str(e).split())[:300]
        host["unread_since"] = host["unread_since"] or time.time()
        return []
    host["skew"] = skew_of(found.clock, asked, time.time())
    its = mine(on_our_clock(found.sums, host["skew"]), host["upstream"], live_at)
    more = counted(its)
    host["requests"] += more.requests
    host["errors"] += more.errors
    host["seconds"] += more.seconds
    host["offset"], host["unread"], host["unread_since"] = found.offset, "", None
    return its


def skew_of(clock: float | None, asked: float, answered: float) -> float:
    """How far the host's clock is ahead of this one's (seconds; behind: below 0), from
    its now as it read the count against the middle of the asking (a kept connection
    answers within a millisecond or so: that much is the error). 0 when it did not say."""
    return 0.0 if clock is None else round(clock - (asked + answered) / 2, 3)


def on_our_clock(sums: list[Sum], skew: float) -> list[Sum]:
    """The answers timed by this machine's clock: the watch's windows (since the switch,
    the last RECENT_SECONDS) are this machine's, and a host's Caddy times by its own."""
    if not skew:
        return sums
    return [dataclasses.replace(s, second=s.second - skew) for s in sums]


# A host's clock this far from onwatch's is said with the evidence: its answers are timed
# by onwatch's clock, but its own logs and steps are not, and NTP is most likely off there.
SKEW_SAID = hosts.SKEW_SAID  # the host's page and check say it from the same


def skew_said(host: dict[str, Any]) -> str:
    """ "deploy@b's clock is 63 s behind onwatch's", or "" when it is within SKEW_SAID."""
    skew = float(host.get("skew") or 0.0)
    if abs(skew) <= SKEW_SAID:
        return ""
    way = "ahead of" if skew > 0 else "behind"
    return (
        f"{host['name']}'s clock is {abs(skew):.0f} s {way} onwatch's (its answers were "
        "timed by onwatch's clock; set the host's time right: NTP)"
    )


def unread_too_long(watch: Watch) -> bool:
    """Whether no host has been read for UNREAD_SECONDS (one never counted: never read)."""
    if any(h["upstream"] and not h["unread"] for h in watch.hosts):
        return False
    latest = max(h["unread_since"] or 0.0 for h in watch.hosts)
    return time.time() - latest >= UNREAD_SECONDS


def unread(watch: Watch) -> str:
    return "; ".join(f"{h['name']}: {h['unread']}" for h in watch.hosts if h["unread"])


def place_at(watch: Watch, host: dict[str, Any], machine: Machine) -> places.Place:
    """The host's place: this machine's, or the SSH host's, its connection kept between
    looks. PlaceError when it is gone from onwatch's hosts."""
    row = Host.objects.filter(pk=host["host"]).first()
    if row is None:
        raise places.PlaceError(f"{host['name']} was removed from onwatch's hosts")
    if row.local:
        return places.LocalPlace(machine)
    key = (watch.pk, row.pk)
    place = _links[key][0] if key in _links else place_of_host(row)
    _links[key] = (place, time.monotonic())
    return place


def place_of_host(host: Host) -> places.Place:
    """The SSH host's place, for the watch to read its count (tests stand one in)."""
    try:
        return remote.place_of(host)
    except hosts.HostError as e:
        raise places.PlaceError(str(e)) from None


def close_idle_links() -> None:
    now = time.monotonic()
    for key, (place, used) in list(_links.items()):
        if now - used > LINK_IDLE_SECONDS:
            _links.pop(key, None)
            place.close()


def close_links(watch: Watch) -> None:
    for key in [k for k in _links if k[0] == watch.pk]:
        _links.pop(key)[0].close()


def stop_all(watch: Watch, machine: Machine) -> None:
    """Caddy's count of the site stops on this machine, or on every host of the watch
    (one that cannot be reached stops at its next switch; the verdict stands)."""
    domain = watch.deploy.service.domain
    if not watch.hosts:
        stop_counting(machine, domain)
        return
    for host in watch.hosts:
        if host["upstream"]:
            with suppress(places.PlaceError):
                place_at(watch, host, machine).stop_counting(domain)
    close_links(watch)
    close_idle_links()


def judged_against(watch: Watch) -> str:
    """ "against those of release 6 (12,312 requests over 5 min)", or the thresholds."""
    base, before = worth(base_of(watch), watch.deploy.service), previous_label(watch)
    if base is None:
        return f"against the thresholds alone: too few answers of {before} to compare with"
    return f"against those of {before} ({base.requests:,} requests over {span_of(watch)})"


def stop_counting(machine: Machine, domain: str) -> None:
    try:
        machine.caddy.stop_counting(domain)
        machine.caddy.forget_answers(domain)
    except OSError:
        pass  # the next switch empties it; the watch's verdict stands


def _unjudged(watch: Watch, why: str) -> bool:
    services.watch_ended(
        watch, WatchState.NOT_JUDGED, f"not judged to the end ({why}): {comparison(watch)}"
    )
    return False


def judged(watch: Watch) -> None:
    """The window ended without a clearly worse release: passed, or too little to judge."""
    service, now = watch.deploy.service, now_of(watch)
    if watch.hosts and not [h for h in watch.hosts if h["upstream"] and not h["unread"]]:
        _unjudged(watch, f"no host could be read at the end of the watch: {unread(watch)}")
        alert_stopped(watch)  # as when no host can be read during it: a person must look
        return
    if now.requests < service.watch_min_requests:
        services.watch_ended(
            watch,
            WatchState.NOT_JUDGED,
            f"not enough traffic to judge: {now.requests:,} requests in "
            f"{watched_seconds(watch):.0f} s (at least {service.watch_min_requests} are needed)"
            + (f"; by host: {by_host(watch)}" if watch.hosts else ""),
        )
        return
    services.watch_ended(watch, WatchState.PASSED, f"passed: {comparison(watch)}")
    resolve_earlier(watch)


# Earlier watches whose incidents a release that passed its watch may resolve: the newest.
EARLIER_SHOWN = 50


def resolve_earlier(watch: Watch) -> None:
    """A release that passed its watch ends the incidents earlier watches of the service
    opened (a release rolled back, or failing): nothing else ever resolved them, and the
    incident page has no button to, so they stayed open for good. Whoever was told hears
    that it is over."""
    service = watch.deploy.service
    bad = (WatchState.ROLLED_BACK, WatchState.FAILING)
    earlier = Watch.objects.filter(deploy__service=service, state__in=bad, pk__lt=watch.pk)
    for found in earlier.order_by("-pk")[:EARLIER_SHOWN]:
        incidents.resolve_incident(
            service.org,
            incident_source(found),
            {"error": watch.verdict},
            title=f"{service.name} is well again: {label_of(watch)} passed its watch",
        )


# --- clearly worse ---------------------------------------------------------------------------


def lately(late: Counts, rule: str | None) -> str:
    if rule == SLOW:
        return (
            f"; in its last {RECENT_SECONDS:.0f} s it took {late.latency()} on average to "
            f"answer {late.requests:,} requests"
        )
    return f"; in its last {RECENT_SECONDS:.0f} s it answered {late.said()} with errors"


def act(watch: Watch, recently: str = "") -> None:
    """Roll back to the release before it, unless a release marked "no rollback past this"
    (or anything else) forbids it: then only the incident, saying why. `recently`: what
    its last answers were, when those, not all since the switch, were clearly worse."""
    service, evidence = watch.deploy.service, comparison(watch) + recently
    try:
        if watch.previous is None:
            raise services.Refusal("the release before it is no longer known", "to")
        services.rollback_target(service, watch.previous.pk)
        rollback = services.queue_rollback(
            service, SYSTEM, "watch", to=watch.previous.pk, queue="rollbacks"
        )
    except services.Refusal as e:
        verdict = f"{evidence}. onwatch did not roll back: {e}"
        title = f"{label_of(watch)} of {service.name} answers {how(watch)}"
        _ended_badly(watch, WatchState.FAILING, title, verdict)
        return
    services.watch_rolling_back(watch, rollback, evidence)
    services.watch_step(
        watch,
        f"{evidence}; onwatch is making {previous_label(watch)} live again "
        f"(rollback #{rollback.pk})",
        ok=False,
    )


def follow_rollback(watch: Watch) -> bool:
    """Once the rollback it asked for has ended, the incident says how; True: not yet."""
    rollback = Deploy.objects.filter(pk=watch.rollback_id or 0).first()
    service, evidence = watch.deploy.service, watch.verdict
    if rollback is not None and rollback.state not in ENDED:
        waited = (timezone.now() - (watch.detected_at or timezone.now())).total_seconds()
        if waited < ROLLBACK_WAIT_SECONDS:
            return True
        gave_up(rollback, waited)
        said = f"its rollback #{rollback.pk} had not ended after {waited:.0f} s and was cancelled"
    elif rollback is not None and rollback.state == State.SUCCEEDED:
        verdict = f"{evidence}; {restored(watch, rollback)}"
        title = f"{service.name} was rolled back: {label_of(watch)} answered {how(watch)}"
        _ended_badly(watch, WatchState.ROLLED_BACK, title, verdict)
        return False
    else:
        why = f"{rollback.state}: {rollback.reason}" if rollback else "it was removed"
        said = f"onwatch could not make {previous_label(watch)} live again ({why})"
    verdict = f"{evidence}; {said}"
    title = f"{label_of(watch)} of {service.name} answers {how(watch)}"
    _ended_badly(watch, WatchState.FAILING, title, verdict)
    return False


def restored(watch: Watch, rollback: Deploy) -> str:
    """ "onwatch made release 6 live again on every host by 12:30:05 UTC, 3.2 s after it
    found release 7 worse": the last host's switch, as users got it everywhere only then."""
    back_at = services.live_everywhere_at(rollback)
    where = " on every host by" if watch.hosts else " at"
    took = ""
    if back_at is not None and watch.detected_at is not None:
        seconds = (back_at - watch.detected_at).total_seconds()
        took = f", {seconds:.1f} s after it found {label_of(watch)} worse"
    return f"onwatch made {previous_label(watch)} live again{where} {at(back_at)}{took}"


def how(watch: Watch) -> str:
    """How it is worse, for titles (its counts no longer change once it was found so): by
    all its answers since the switch, or else by its recent ones."""
    service, base = watch.deploy.service, base_of(watch)
    rule = worse_by(now_of(watch), base, service) or worse_by(recent_of(watch), base, service)
    return "too slowly" if rule == SLOW else "with errors"


def _ended_badly(watch: Watch, state: str, title: str, verdict: str) -> None:
    """The incident first, then the watch's end: a watch never ends "rolled back" or
    "failing" with nobody told, even when opening the incident fails."""
    watch.state = state  # the incident's advice follows it
    _incident(watch, title, verdict)
    services.watch_ended(watch, state, verdict)


def gave_up(rollback: Deploy, waited: float) -> None:
    """A rollback left queued would run whenever a slot frees, perhaps over a newer deploy:
    the watch that asked for it no longer waits, so nor does it."""
    if rollback.job is None:
        return
    # One that ended meanwhile says what it did on its own row.
    with suppress(jobs.NotCancellable):
        jobs.cancel(rollback.job, f"the watch, after {waited:.0f} s", may_stop_alerts=True)


ADVICE = {
    WatchState.ROLLED_BACK: (
        "Nothing is urgent: the release before it serves again. Read the deploy's timeline "
        "and the app's own logs, fix the cause and deploy again."
    ),
    WatchState.FAILING: (
        "The failing release still serves: look now. Deploy a fixed commit, or roll back by "
        "hand if that is safe for the data."
    ),
}


def incident_source(watch: Watch) -> str:
    return f"deploys.watch.{watch.pk}"


def incident_page(watch: Watch) -> str:
    """The page of the incident the watch opened when it found its release clearly worse;
    empty when it opened none."""
    found = incidents.latest(watch.deploy.service.org, incident_source(watch))
    return reverse("incident_detail", args=[found.pk]) if found else ""


def _began(watch: Watch) -> tuple[datetime, str]:
    """When the trouble began, and how: as the release went live when all its answers
    since were worse, not when enough of them proved it; else (it served well, then its
    last answers were worse) about as its recent window began."""
    switched, found = watch.deploy.switched_at, watch.detected_at or timezone.now()
    base, service = base_of(watch), watch.deploy.service
    if clearly_worse(now_of(watch), base, service) or not clearly_worse(
        recent_of(watch), base, service
    ):
        return switched or found, f"{label_of(watch)} went live"
    turned = found - timedelta(seconds=RECENT_SECONDS)
    return turned, f"{label_of(watch)} served well, then its answers turned bad"


def _incident(watch: Watch, title: str, verdict: str) -> None:
    """One incident per watch, to the channels of the service's deploy alerts (those the
    service chose, or all): the evidence is its text."""
    deploy = watch.deploy
    began_at, began = _began(watch)
    incidents.open_incident(
        deploy.service.org,
        incident_source(watch),
        title,
        {"error": verdict, "began": began},
        about=incidents.About(
            began_at=began_at,
            page=reverse("deploy_detail", args=[deploy.pk]),
            advice=ADVICE.get(WatchState(watch.state), ""),
        ),
        channels=services.deploy_channels(deploy.service),
    )
