"""The prober against real HTTP targets on loopback: in this process for a bounded time,
and as real `onwatch prober` processes sharing one database."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import Delivery
from onwatch.alerts.services import add_channel
from onwatch.core import fields
from onwatch.core.models import Organization
from onwatch.uptime import state
from onwatch.uptime.models import CheckResult, Monitor, State, StateChange
from onwatch.uptime.prober import Prober, Tuning
from tests.support.child import alerts as child_alerts
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.child import uptime as child_uptime
from tests.support.fixtures import make_org
from tests.support.procs import Running, free_port, isolated
from tests.support.receivers import add_channels
from tests.support.servers import HttpServer

# Short ticks and leases keep each test to seconds.
FAST = Tuning(tick=0.2, horizon=1.0, lease=5.0, stop_grace=1.0)
inprocess = pytest.mark.django_db(transaction=True)


def http_monitor(org: Organization, url: str, **fields: object) -> Monitor:
    n = Monitor.objects.count()
    defaults: dict[str, object] = {"interval": 1, "retry_interval": 1, "timeout": 5}
    return Monitor.objects.create(
        org=org, name=f"site {n}", kind="http", config={"url": url}, **{**defaults, **fields}
    )


def drive(prober: Prober, until: Callable[[], bool], timeout: float = 20) -> float:
    """Run the prober until `until()` holds (asked in the prober's own database thread, so
    the test never contends with it); stop it cleanly and return the seconds it ran."""

    async def main() -> float:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        began = loop.time()
        runner = loop.create_task(prober.run(stop))
        try:
            while not await prober.db(until):
                assert not runner.done(), "the prober stopped by itself"
                assert loop.time() - began < timeout, f"not done within {timeout} s"
                await asyncio.sleep(0.05)
            return loop.time() - began
        finally:
            stop.set()
            await runner

    return asyncio.run(main())


def results_of(m: Monitor) -> list[CheckResult]:
    return list(CheckResult.objects.filter(monitor=m).order_by("at"))


def each_has(monitors: Iterable[Monitor], n: int) -> Callable[[], bool]:
    ids = [m.pk for m in monitors]

    def check() -> bool:
        counts = [CheckResult.objects.filter(monitor_id=i).count() for i in ids]
        return min(counts) >= n

    return check


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


@inprocess
def test_it_checks_each_monitor_once_per_interval_and_writes_the_results() -> None:
    org = make_org()
    with HttpServer() as web:
        monitors = [http_monitor(org, web.url("/ok")) for _ in range(20)]
        drive(Prober(tuning=FAST), each_has(monitors, 3))
        requests = len(web.seen)
    results = list(CheckResult.objects.all())
    assert requests == len(results)  # every request made was recorded, none twice
    assert all(r.ok and r.status_code == 200 and r.latency_ms is not None for r in results)
    for m in monitors:
        m.refresh_from_db()
        times = [r.at for r in results_of(m)]
        # One check per slot: never two within one interval (timers may fire a hair early).
        assert min(gaps(times)) > 0.95
        assert m.state == State.UP
        assert (m.claimed_by, m.claimed_until) == ("", None)
        assert m.last_checked_at == times[-1]
        assert m.next_check_at == times[-1] + timedelta(seconds=1)


@inprocess
def test_a_monitors_settings_are_decrypted_once_per_change_not_once_per_check() -> None:
    org = make_org()
    with HttpServer() as web:
        m = http_monitor(org, web.url("/ok"))
        fields.forget_opened()
        drive(Prober(tuning=FAST), each_has([m], 3))
        assert fields._opened.cache_info().misses == 1
        Monitor.objects.filter(pk=m.pk).update(config={"url": web.url("/ok"), "method": "GET"})
        drive(Prober(tuning=FAST), each_has([m], 6))
    assert fields._opened.cache_info().misses == 2


@inprocess
def test_it_goes_down_after_n_failures_opens_an_incident_and_resolves_it() -> None:
    org = make_org()
    with HttpServer() as web:
        m = http_monitor(org, web.url("/error"), confirmations=3, interval=60)
        down = drive(Prober(tuning=FAST), lambda: Monitor.objects.get(pk=m.pk).state == "down")
        m.refresh_from_db()
        failed = results_of(m)
        incident = incidents.current(org, state.source(m))
        # Fixed, and looked at again now rather than a whole interval later.
        fixed = {"url": web.url("/ok")}
        Monitor.objects.filter(pk=m.pk).update(config=fixed, next_check_at=timezone.now())
        drive(Prober(tuning=FAST), lambda: Monitor.objects.get(pk=m.pk).state == "up")
    # Three failures at the retry interval (1 s) confirm it: not one, not the 60 s interval.
    assert [(r.ok, r.status_code) for r in failed] == [(False, 500)] * 3
    assert 1.5 < down < 10
    change = StateChange.objects.filter(monitor=m, new=State.DOWN).get()
    assert change.old == State.PENDING
    assert change.evidence["status"] == 500
    assert "500" in change.evidence["error"]
    assert "database is down" in change.evidence["body"]
    assert incident is not None and incident.title == f"{m.name} is down"
    incident.refresh_from_db()
    assert incident.state == "resolved"


HANG = 5  # seconds each hanging check holds its slot (its timeout)
# How late a check may start for load alone, not for waiting on the hanging checks: two
# intervals of the fine monitors, far more than a busy machine makes them late.
LEEWAY = timedelta(seconds=2)


@inprocess
def test_a_hanging_target_does_not_stall_the_other_monitors() -> None:
    org = make_org()
    with HttpServer() as web:
        hanging = [http_monitor(org, web.url("/hang"), timeout=HANG, interval=60) for _ in range(8)]
        fine = [http_monitor(org, web.url("/ok")) for _ in range(20)]
        # Few slots on purpose: the hanging checks take 8 of 10 until they time out.
        tuning = Tuning(tick=0.2, horizon=1.0, lease=5.0, stop_grace=1.0, concurrency=10)
        drive(
            Prober(tuning=tuning),
            lambda: each_has(hanging, 1)() and each_has(fine, 4)(),
            timeout=30,
        )
    starts = [results_of(m)[0].at for m in hanging]
    for m in hanging:
        result = results_of(m)[0]
        assert not result.ok
        assert result.error == f"No answer within {HANG} s"
    # From the last hanging check's start to the first one's timeout, all eight held slots.
    hung_from, hung_until = max(starts), min(starts) + timedelta(seconds=HANG)
    for m in fine:
        # Judged against its schedule, not the clock: each check that fell due while the
        # others hung started within LEEWAY of falling due. Stalled behind them, one due
        # LEEWAY or more before they timed out would have waited for that.
        due = [(d, made) for d, made in checks_due_and_made(m) if hung_from <= d < hung_until]
        assert any(d <= hung_until - LEEWAY for d, _ in due), f"{m.name}: none due in time"
        assert all(made - d < LEEWAY for d, made in due), (m.name, due)


def checks_due_and_made(m: Monitor) -> list[tuple[datetime, datetime]]:
    """When each check after the first fell due (an interval after the one before it
    started) and when it started."""
    times = [r.at for r in results_of(m)]
    interval = timedelta(seconds=m.interval)
    return [(before + interval, at) for before, at in itertools.pairwise(times)]


@inprocess
def test_heartbeats_disabled_and_paused_monitors_are_never_probed() -> None:
    org = make_org()
    with HttpServer() as web:
        url = web.url("/ok")
        skipped = [
            Monitor.objects.create(org=org, name="cron job", kind="heartbeat"),
            http_monitor(org, url, enabled=False),
            http_monitor(org, url, state=State.PAUSED),
        ]
        probed = http_monitor(org, url)
        drive(Prober(tuning=FAST), each_has([probed], 3))
    for m in skipped:
        m.refresh_from_db()
        assert results_of(m) == []
        assert m.claimed_by == ""


@inprocess
def test_after_a_restart_every_overdue_monitor_is_checked_at_once() -> None:
    org = make_org()
    with HttpServer() as web:
        monitors = [http_monitor(org, web.url("/ok"), interval=60) for _ in range(300)]
        # Down for an hour: everything is overdue, by up to an hour.
        an_hour_ago = timezone.now() - timedelta(hours=1)
        Monitor.objects.update(next_check_at=an_hour_ago)
        took = drive(Prober(tuning=FAST), each_has(monitors, 1), timeout=60)
    # Well inside one interval (60 s), and no staggering on purpose.
    assert took < 20


@inprocess
def test_monitors_of_a_prober_whose_lease_ran_out_are_taken_over_and_alerted() -> None:
    org = make_org()
    add_channel(org, "ops", f"json://127.0.0.1:{free_port()}/")
    with HttpServer() as web:
        monitors = [http_monitor(org, web.url("/ok")) for _ in range(5)]
        held_by_ghost = timezone.now() + timedelta(seconds=1.5)
        Monitor.objects.update(claimed_by="ghost:1:dead", claimed_until=held_by_ghost)
        drive(Prober(tuning=FAST), each_has(monitors, 1))
    for m in monitors:
        first = results_of(m)[0]
        assert first.at >= held_by_ghost  # not while the lease still held
    titles = list(Delivery.objects.values_list("title", flat=True))
    assert titles == ["A prober stopped answering; its monitors were taken over"]
    body = Delivery.objects.get().body
    assert "ghost:1:dead" in body


# --- real `onwatch prober` processes ------------------------------------------------------


def collect(env: dict[str, str]) -> tuple[dict[str, list[float]], int]:
    found = json.loads(call(child_uptime.print_checks, env))
    return found["times"], found["claimed"]


def checks_made(proc: Running) -> int:
    line = proc.wait_for("stopped after")
    found = re.search(r"stopped after (\d+) checks", line)
    assert found is not None
    return int(found[1])


def test_two_probers_share_200_monitors_and_no_slot_is_checked_twice(tmp_path: Path) -> None:
    # Each may hold 120 claims, so neither can take all 200 however fast it is.
    with (
        HttpServer() as web,
        isolated(tmp_path, migrated=True, ONWATCH_PROBER_BACKLOG="120") as env,
    ):
        call(child_core.start_up, env, migrate=True)
        with Running(["prober"], env) as p1, Running(["prober"], env) as p2:
            p1.wait_for("ready")
            p2.wait_for("ready")
            # Made once both run, so each first check is on time (one overdue by more than
            # a few seconds would have its next check brought forward).
            call(child_uptime.add_http_monitors, env, web.url("/ok"), 200)
            call(child_uptime.wait_each_checked, env, 3)
            # SIGTERM: each finishes what is in flight, writes it and lets go of its claims.
            assert (p1.stop(), p2.stop()) == (0, 0)
        times, claimed = collect(env)
        requests = len(web.seen)
    made = [checks_made(p1), checks_made(p2)]
    total = sum(len(t) for t in times.values())
    assert len(times) == 200
    assert all(n > 0 for n in made)  # both took part
    assert sum(made) == total == requests  # every check recorded once, by one prober
    # One check per slot: never two checks of a monitor within its interval (1 s).
    assert min(min(gaps_of(t)) for t in times.values()) > 0.95
    assert claimed == 0


def gaps_of(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_killed_probers_monitors_are_taken_over_after_its_lease(tmp_path: Path) -> None:
    lease = 3
    with (
        HttpServer() as web,
        isolated(tmp_path, migrated=True, ONWATCH_PROBER_LEASE_SECONDS=str(lease)) as env,
    ):
        call(child_core.start_up, env, migrate=True)
        with Running(["prober"], env) as doomed, Running(["prober"], env) as survivor:
            name = doomed.wait_for("ready").split("prober ")[-1].removesuffix(" ready")
            survivor.wait_for("ready")
            call(child_uptime.add_http_monitors, env, web.url("/ok"), 50)
            add_channels(env, {"ops": f"json://127.0.0.1:{free_port()}/"})
            call(child_uptime.wait_each_checked, env, 2)
            kill = json.loads(call(child_uptime.kill_while_holding, env, name, doomed.proc.pid))
            doomed.proc.wait()
            call(child_uptime.wait_each_checked, env, 2, kill["killed"])
            survivor.wait_for(f"prober {name} stopped answering")
            assert survivor.stop() == 0
        times, claimed = collect(env)
        titles = json.loads(call(child_alerts.print_delivery_titles, env))
    assert kill["held"]
    for monitor_id, until in kill["held"].items():
        taken_over = min(t for t in times[monitor_id] if t > kill["killed"])
        # Not while the dead prober's lease still held; soon after it ran out (a tick).
        assert until <= taken_over < until + 2.5
    assert min(min(gaps_of(t)) for t in times.values()) > 0.95
    assert titles == ["A prober stopped answering; its monitors were taken over"]
    assert claimed == 0


def test_onwatch_up_runs_a_prober(tmp_path: Path) -> None:
    with HttpServer() as web, isolated(tmp_path, migrated=True) as env, Running(["up"], env) as up:
        up.wait_for("prober started (pid", timeout=60)
        call(child_uptime.add_http_monitors, env, web.url("/ok"), 3)
        call(child_uptime.wait_each_checked, env, 2)
        assert up.stop() == 0
