"""The prober: one asyncio loop that makes thousands of checks in one process.

Each due monitor is claimed for one check — one slot — under a lease (`claimed_by`,
`claimed_until`), taken with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL and inside an
IMMEDIATE transaction on SQLite, so any number of probers share the monitors and no slot
is checked twice. A claim is given up only once the outcome has been applied, which has
moved `next_check_at` on. A prober renews the leases it holds; one that dies stops
renewing and, when the lease has run out, another prober takes its monitors over and
says so.

The event loop only waits on sockets and timers. Database calls run in two threads of the
prober's own, each with its connection: one claims and renews, one writes results back.
A slow write (a busy database) then delays neither a check nor the renewal of a lease.
(On SQLite, which takes one writer at a time, one thread does both.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from onwatch.uptime import probes, state
from onwatch.uptime.models import CheckResult, Kind, Monitor, State
from onwatch.uptime.state import Outcome

log = logging.getLogger("onwatch.prober")

PROBED = [kind.value for kind in Kind if kind != Kind.HEARTBEAT]  # heartbeats are pushed
# probes.run keeps to the check's timeout itself; this backstop only catches a probe that
# does not, so that it cannot hold a slot forever.
TIMEOUT_GRACE = 2.0
REPORT_SECONDS = 60.0
SPREAD_AFTER = 5.0  # seconds late: a monitor this overdue missed its slot (a restart)
WRITE_ATTEMPTS = 3
ERROR_LENGTH = CheckResult._meta.get_field("error").max_length or 500


@dataclass(frozen=True)
class Tuning:
    concurrency: int = 500  # checks in flight at once (and connections in the pool)
    lease: float = 30.0
    tick: float = 1.0  # claim, write results and release claims this often
    # Claim what falls due this soon, so the claim's own round trip never makes it late.
    horizon: float = 3.0
    batch: int = 500  # monitors per claim query
    backlog: int = 2000  # monitors claimed and not yet written back, at most
    max_jitter: float = 0.5  # and at most 1 % of the monitor's interval
    stop_grace: float = 3.0  # for checks in flight when asked to stop

    @classmethod
    def from_settings(cls, **overrides: Any) -> Tuning:
        base = {
            "concurrency": settings.PROBER_CONCURRENCY,
            "lease": float(settings.PROBER_LEASE_SECONDS),
            "backlog": settings.PROBER_BACKLOG,
        }
        return cls(**{**base, **overrides})


@dataclass
class Done:
    monitor: Monitor
    outcome: Outcome
    started: datetime
    late: float  # seconds after its due time


def prober_name() -> str:
    # The random part tells apart probers that share a pid (tests run two in one process).
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


# --- database steps: these run in the prober's database thread ------------------------


def claim(name: str, limit: int, horizon: float, lease: float) -> list[Monitor]:
    """Claim up to `limit` monitors due within `horizon` seconds, soonest first.

    The instances keep the `claimed_by` they had before: a name there is a prober whose
    lease ran out.
    """
    with transaction.atomic():
        # Read inside the transaction: on SQLite BEGIN IMMEDIATE may have waited.
        now = timezone.now()
        free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        due = (
            Monitor.objects.filter(
                free,
                enabled=True,
                kind__in=PROBED,
                next_check_at__lte=now + timedelta(seconds=horizon),
            )
            .exclude(state=State.PAUSED)
            .order_by("next_check_at", "id")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        monitors = list(due[:limit])
        if monitors:
            Monitor.objects.filter(id__in=[m.pk for m in monitors]).update(
                claimed_by=name, claimed_until=now + timedelta(seconds=lease)
            )
    return monitors


def renew(name: str, lease: float) -> int:
    with transaction.atomic():
        held = Monitor.objects.filter(claimed_by=name)
        if connection.features.has_select_for_update_skip_locked:
            # Rows the writer thread has locked are being released anyway; waiting for
            # them while it waits for others could deadlock.
            ids = (
                held.select_for_update(skip_locked=True).order_by("id").values_list("id", flat=True)
            )
            held = Monitor.objects.filter(id__in=list(ids), claimed_by=name)
        return held.update(claimed_until=timezone.now() + timedelta(seconds=lease))


def release_all(name: str) -> int:
    return Monitor.objects.filter(claimed_by=name).update(claimed_by="", claimed_until=None)


def record(name: str, done: list[Done]) -> int:
    """Store the results, apply the outcomes and release the claims, in one transaction.

    Only monitors still claimed by this prober count: one whose lease ran out (this
    prober stalled) has gone to another prober, whose check of the slot is the one kept.
    One paused or switched off meanwhile is only released.
    """
    with transaction.atomic():
        ids = [d.monitor.pk for d in done]
        # Locked (on PostgreSQL) so that no other prober can claim them before the commit.
        rows = Monitor.objects.select_for_update().filter(id__in=ids, claimed_by=name)
        found = list(rows.order_by("id").values_list("id", "enabled", "state"))
        ours = {pk for pk, _, _ in found}
        live = {pk for pk, enabled, now in found if enabled and now != State.PAUSED}
        kept = [d for d in done if d.monitor.pk in live]
        CheckResult.objects.bulk_create([result_row(d) for d in kept], batch_size=500)
        applied = [d for d in kept if apply_one(d)]
        spread = [d.monitor for d in applied if spread_out(d)]
        Monitor.objects.bulk_update(spread, ["next_check_at"], batch_size=500)
        Monitor.objects.filter(id__in=ours, claimed_by=name).update(
            claimed_by="", claimed_until=None
        )
    if len(ours) < len(done):
        log.warning("%d check(s) dropped: their claims had run out", len(done) - len(ours))
    return len(kept)


def result_row(d: Done) -> CheckResult:
    o = d.outcome
    status = o.status_code if o.status_code is not None and 0 < o.status_code < 1000 else None
    latency = min(max(o.latency_ms, 0), 2**31 - 1) if o.latency_ms is not None else None
    return CheckResult(
        monitor_id=d.monitor.pk,
        at=d.started,
        ok=o.ok,
        latency_ms=latency,
        status_code=status,
        error=o.error[:ERROR_LENGTH],
    )


def apply_one(d: Done) -> bool:
    # A passing check of a monitor already up changes no state: apply's own transaction
    # covers it. Anything else may open or resolve an incident too, which a savepoint of
    # its own keeps from spoiling the batch should it fail. (Each savepoint is two more
    # round trips to PostgreSQL, for every check.)
    try:
        with nullcontext() if state.steady(d.monitor, d.outcome) else transaction.atomic():
            state.apply(d.monitor, d.outcome, d.started)
        return True
    except Exception:
        # One bad row must not lose the batch (nor stop the loop).
        log.exception("monitor %s: the outcome of its check could not be applied", d.monitor.pk)
        # Move it on anyway, or it would be checked again at once and fail again, forever.
        later = d.started + timedelta(seconds=d.monitor.interval)
        Monitor.objects.filter(pk=d.monitor.pk).update(next_check_at=later)
        return False


def spread_out(d: Done) -> bool:
    """Bring the next check of a monitor that was overdue forward by a random part of
    its lateness (at most half an interval).

    After a restart every overdue monitor is checked within seconds; were each next
    check a full interval later, that burst would repeat every interval for ever. Spread,
    it thins out over the following intervals. A check only ever comes sooner.
    """
    if d.late <= SPREAD_AFTER or not d.outcome.ok:
        return False
    m = d.monitor
    # Spreads the burst; not security-relevant.
    sooner = random.uniform(0, min(d.late, m.interval / 2))  # noqa: S311
    m.next_check_at -= timedelta(seconds=sooner)
    return True


def notice_takeover(name: str, monitors: list[Monitor], alerted: set[tuple[str, int]]) -> None:
    """Say that monitors came from a prober whose lease ran out: it died or hung."""
    gone: dict[str, list[Monitor]] = {}
    for m in monitors:
        if m.claimed_by and m.claimed_by != name:
            gone.setdefault(m.claimed_by, []).append(m)
    for other, taken in gone.items():
        log.warning(
            "prober %s stopped answering; %s took over %d of its monitors",
            other,
            name,
            len(taken),
        )
        for m in taken:
            if (other, m.org_id) not in alerted:
                alerted.add((other, m.org_id))
                alert_takeover(other, m)


def alert_takeover(other: str, m: Monitor) -> None:
    # Imported here: the alerts app is only needed when something went wrong.
    from onwatch.alerts.services import raise_alert

    raise_alert(
        org=m.org,
        title="A prober stopped answering; its monitors were taken over",
        body=(
            f"The prober {other} stopped renewing its claims (it died or hung). Another "
            f"prober took over its checks, starting with {m.name!r}. If probers keep "
            "dying, look at their logs and at the machine's memory."
        ),
        notify_type="warning",  # the checks go on: nothing is down because of it
    )


def close_connection() -> None:
    # A function, not `connection.close`: the proxy must be resolved in the database thread.
    connection.close()


def guarded[T](fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except DatabaseError:
        # A broken connection (the database restarted) is replaced on the next call
        # instead of failing every call from now on.
        connection.close()
        raise


# --- the event loop ---------------------------------------------------------------------


def make_session(concurrency: int) -> aiohttp.ClientSession:
    """One session for every check: pooled connections, no cookies carried over."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # one monitor's cookies must not reach another
        trust_env=False,  # no proxy from the environment: checks go where they say
    )


class Prober:
    def __init__(self, name: str | None = None, tuning: Tuning | None = None) -> None:
        self.name = name or prober_name()
        self.t = tuning or Tuning.from_settings()
        # Every monitor claimed and not yet written back: its timer, then its check.
        self.held: dict[int, asyncio.TimerHandle | asyncio.Task[None]] = {}
        self.done: list[Done] = []
        self.lateness: list[float] = []  # seconds late, since the last report
        self.checks = 0  # written back, since start
        self.write_failures = 0
        self.alerted: set[tuple[str, int]] = set()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="prober-claims")
        # SQLite lets one connection write at a time: a second one would only wait for the
        # lock (and, on the shared in-memory database of tests, fail instead of waiting).
        sqlite = connection.vendor == "sqlite"
        self._writer = (
            self._db if sqlite else ThreadPoolExecutor(1, thread_name_prefix="prober-writes")
        )
        self._flushing: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    async def db[T](self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database step in the prober's claims thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, guarded, fn, *args)

    async def write[T](self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database step in the prober's writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, guarded, fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        self._slots = asyncio.Semaphore(self.t.concurrency)
        async with make_session(self.t.concurrency) as self._session:
            log.info("prober %s ready", self.name)
            try:
                await self.loop(stop)
            finally:
                await self.shutdown()
        self._db.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        log.info("prober %s stopped after %d checks", self.name, self.checks)

    async def loop(self, stop: asyncio.Event) -> None:
        clock = asyncio.get_running_loop().time
        renew_at = clock() + self.t.lease / 3
        report_at = clock() + REPORT_SECONDS
        while not stop.is_set():
            # Claim before writing back (which releases): a monitor just released is left
            # for the other probers until this one's next tick, so they share the work.
            await self.step(self.claim)
            if self._flushing is None or self._flushing.done():
                # In the background: the next claim does not wait for a slow write.
                self._flushing = asyncio.create_task(self.step(self.flush))
            if clock() >= renew_at:
                renew_at = clock() + self.t.lease / 3
                await self.step(self.renew)
            if clock() >= report_at:
                report_at = clock() + REPORT_SECONDS
                self.report()
            # A little unevenness keeps probers from ticking in lockstep.
            tick = self.t.tick * random.uniform(0.9, 1.1)  # noqa: S311
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)

    async def step(self, fn: Callable[[], Any]) -> None:
        try:
            await fn()
        except Exception:
            # The database may be restarting: note it and carry on with the next tick.
            log.exception("prober step %s failed", fn.__name__)

    async def claim(self) -> None:
        room = self.t.backlog - len(self.held)
        while room > 0:
            want = min(room, self.t.batch)
            monitors = await self.db(claim, self.name, want, self.t.horizon, self.t.lease)
            if any(m.claimed_by and m.claimed_by != self.name for m in monitors):
                await self.db(notice_takeover, self.name, monitors, self.alerted)
            for m in monitors:
                self.schedule(m)
            if len(monitors) < want:
                return
            room -= len(monitors)

    async def renew(self) -> None:
        await self.db(renew, self.name, self.t.lease)

    def schedule(self, m: Monitor) -> None:
        if m.pk in self.held:
            return  # still ours from an earlier claim: one check per slot
        # Spreads monitors that share a due time; not security-relevant.
        jitter = random.uniform(0, min(self.t.max_jitter, m.interval / 100))  # noqa: S311
        delay = (m.next_check_at - timezone.now()).total_seconds() + jitter
        loop = asyncio.get_running_loop()
        self.held[m.pk] = loop.call_later(max(0.0, delay), self.start, m)

    def start(self, m: Monitor) -> None:
        self.held[m.pk] = asyncio.get_running_loop().create_task(self.check(m))

    async def check(self, m: Monitor) -> None:
        assert self._slots is not None
        async with self._slots:
            started = timezone.now()
            late = (started - m.next_check_at).total_seconds()
            self.lateness.append(late)
            outcome = await self.probe(m)
        self.done.append(Done(m, outcome, started, late))

    async def probe(self, m: Monitor) -> Outcome:
        assert self._session is not None
        limit = float(m.timeout)
        try:
            async with asyncio.timeout(limit + TIMEOUT_GRACE):
                return await probes.run(m.kind, m.config, limit, self._session)
        except TimeoutError:
            return Outcome(ok=False, error=f"No answer within {limit:g} s")
        except Exception as e:  # probes.run never raises; should it, the loop goes on
            log.exception("monitor %s: the check crashed", m.pk)
            crashed = Outcome(ok=False, error=f"The check failed: {type(e).__name__}: {e}")
            return crashed.readable()

    async def flush(self) -> None:
        if not self.done:
            return
        batch, self.done = self.done, []
        try:
            await self.write(record, self.name, batch)
        except Exception:
            self.write_failures += 1
            if self.write_failures < WRITE_ATTEMPTS:
                self.done = batch + self.done  # tried again on the next tick
                raise
            # Given up: the claims run out and these monitors are checked again.
            log.error("dropped %d results after %d failed writes", len(batch), WRITE_ATTEMPTS)
        self.write_failures = 0
        for d in batch:
            self.held.pop(d.monitor.pk, None)
        self.checks += len(batch)

    def report(self) -> None:
        late = sorted(self.lateness)
        self.lateness = []
        p99 = late[int(len(late) * 0.99)] if late else 0.0
        running = sum(1 for h in self.held.values() if isinstance(h, asyncio.Task) and not h.done())
        log.info(
            "prober %s: %d checks in the last %.0f s, p99 lateness %.2f s, %d running, %d held",
            self.name,
            len(late),
            REPORT_SECONDS,
            p99,
            running,
            len(self.held),
        )

    async def shutdown(self) -> None:
        """Finish the checks in flight (briefly), write them back, release every claim."""
        running: list[asyncio.Task[None]] = []
        for handle in self.held.values():
            if isinstance(handle, asyncio.TimerHandle):
                handle.cancel()  # not started: released unchanged, due for the next prober
            elif not handle.done():
                running.append(handle)
        if running:
            _, late = await asyncio.wait(running, timeout=self.t.stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._flushing is not None:
            await self._flushing
        await self.step(self.flush)
        await self.step(self.release)
        await self.db(close_connection)
        await self.write(close_connection)

    async def release(self) -> None:
        await self.db(release_all, self.name)


async def serve(prober: Prober) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await prober.run(stop)


def run_prober() -> None:
    asyncio.run(serve(Prober()))
