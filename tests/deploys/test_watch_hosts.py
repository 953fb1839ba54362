"""The watch of a service on SSH hosts (watch.py's hosts part): each host's Caddy counts
there, the watch reads it through the host's agent, judges the sum and says what each
host answered. End to end with a real SSH host on loopback (tests/support/ssh_hosts.py):
its sshd, agent, supervisord and Caddy, clients loading the site through its Caddy."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import agent, places, releases, services, switch, watch
from onwatch.deploys.models import Deploy, Host, Release, Service, State, Watch, WatchState
from tests.support import switching
from tests.support.deploys import commit
from tests.support.load import Load, fetch
from tests.support.releases import app_files
from tests.support.several import SSH_HOST, GatedPlace, checked_ssh_host, ready_host
from tests.support.ssh_hosts import ssh_host
from tests.support.switching import QUICK_GATE, listen_port, own_machine
from tests.support.watching import deploy, watched

pytestmark = pytest.mark.once


def host(name: str, requests: int, errors: int, unread: str = "", upstream: str = "x") -> Any:
    return {
        "host": 1,
        "name": name,
        "upstream": upstream,
        "offset": 0,
        "requests": requests,
        "errors": errors,
        "seconds": requests * 0.012,
        "unread": unread,
        "unread_since": 1.0 if unread else None,
    }


def test_the_evidence_says_what_each_host_answered_and_which_could_not_be_read() -> None:
    found = Watch(
        deploy=Deploy(service=Service(name="shop"), release=Release(pk=7, commit="fed4321")),
        hosts=[
            host("deploy@a", 140, 0),
            host("deploy@b", 140, 31),
            host("deploy@c", 50, 1, unread="deploy@c went away during the count's read"),
            host("deploy@d", 0, 0, unread="ssh: connection refused"),
            host("deploy@e", 0, 0, unread="Caddy keeps no request log", upstream=""),
        ],
        requests=330,
        errors=32,
        seconds=3.96,
    )
    assert watch.by_host(found) == (
        "deploy@a: 0 of 140 answers 5xx, 12 ms on average; "
        "deploy@b: 31 of 140 answers 5xx, 12 ms on average; "
        "deploy@c: 1 of 50 answers 5xx, 12 ms on average, then it could not be read "
        "(deploy@c went away during the count's read); "
        "deploy@d: could not be read (ssh: connection refused); "
        "deploy@e: not counted (Caddy keeps no request log)"
    )
    assert watch.comparison(found).endswith(f"; by host: {watch.by_host(found)}")
    # While it watches, the deploy's page says which hosts cannot be read now.
    found.until = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
    assert watch.said(found) == (
        "watching until 12:30:00 UTC: 330 requests answered so far, 32 of them errors; "
        "deploy@c cannot be read now; deploy@d cannot be read now; "
        "deploy@e cannot be read now"
    )


def test_no_host_read_for_long_enough_is_told_apart_from_one_away_for_a_look() -> None:
    away = host("deploy@b", 0, 0, unread="gone")
    found = Watch(hosts=[host("deploy@a", 10, 0), away])
    assert not watch.unread_too_long(found)
    found.hosts = [host("deploy@a", 10, 0, unread="gone"), away]
    assert watch.unread_too_long(found)  # both away since long ago (1 s after the epoch)
    found.hosts[0]["unread_since"] = 1e12  # the first just went away
    assert not watch.unread_too_long(found)


def timed(found: Watch, deployed: Deploy) -> tuple[float, float]:
    """Detection (switch → found clearly worse) and restore (→ the release before it took
    requests again), in seconds."""
    assert found.detected_at and deployed.switched_at and found.rollback is not None
    assert found.rollback.switched_at is not None
    detected = (found.detected_at - deployed.switched_at).total_seconds()
    return detected, (found.rollback.switched_at - found.detected_at).total_seconds()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel", "machine")
def test_a_release_on_an_ssh_host_is_watched_there_rolled_back_when_failing_or_said_unread(
    org: Organization, shop: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A good release passes; one answering 20 % 5xx is found and the release before it
    serves again within the issue's times; with the host gone, the next is not judged and
    says why."""
    monkeypatch.setattr(releases, "GATE", dataclasses.replace(QUICK_GATE, seconds=4))
    monkeypatch.setattr(watch, "UNREAD_SECONDS", 3.0)
    services.set_watch(shop, 4, 20, 5.0, 3.0, SYSTEM)
    repo = tmp_path / "repo"
    with ssh_host() as made:
        services.set_service_hosts(shop, [checked_ssh_host(org, made)], SYSTEM)
        deploy(shop, repo, "v1")
        # No slow requests: each switch's drain is then over at once (the tests' budget).
        load = Load(made.options.http_port, "shop.test", slow=0).start()
        try:
            good = deploy(shop, repo, "v2")
            passed = watched(good)
            bad = deploy(shop, repo, "v3", fail_every=5)
            failed = watched(bad)
            serving = {fetch(made.options.http_port, "shop.test")[1].split()[0] for _ in range(5)}
            last = deploy(shop, repo, "v4")
            made.sshd.stop()  # the host goes away: no new connection, and the kept one cut
            for place, _ in watch._links.values():
                link = getattr(place, "link", None)
                if link is not None:
                    link.proc.kill()
            gone = watched(last)
        finally:
            tally = load.stop()
    name = made.name
    assert passed.state == WatchState.PASSED, passed.verdict
    assert [h["name"] for h in passed.hosts] == [name] and passed.requests >= 20
    assert re.search(rf"; by host: {re.escape(name)}: 0 of [\d,]+ answers 5xx", passed.verdict)
    # v3's baseline is v2's watch, counted on the host.
    assert failed.base_kept_requests == passed.requests
    assert failed.state == WatchState.ROLLED_BACK, failed.verdict
    assert failed.rollback is not None and failed.rollback.release == good.release
    assert serving == {"v2"}
    errors = rf"{re.escape(name)}: [\d,]+ of [\d,]+ answers 5xx"
    assert re.search(rf"; by host: {errors}, \d+ ms on average; onwatch made", failed.verdict)
    detected, restored = timed(failed, bad)
    print(f"SSH host: detected {detected:.1f} s after the switch, restored {restored:.1f} s later")
    assert detected <= 10 and restored <= 5, (detected, restored)
    assert gone.state == WatchState.NOT_JUDGED, gone.verdict
    assert gone.verdict.startswith(
        f"not judged to the end (no host could be read for 3 s: {name}: "
    ), gone.verdict
    assert tally.ok > 0


# The second host's failing releases answer every third request 500.
EVERY_THIRD_FAILS = {"FAIL_EVERY": "3"}


@pytest.fixture
def other() -> Iterator[switch.Machine]:
    with own_machine() as m:
        yield m


def committed(service: Service, repo: Path, version: str) -> Deploy:
    commit(repo, app_files(version), f"Version {version}")
    done = services.queue_deploy(service, SYSTEM, "cli")
    jobs.run_pending(kinds=[services.DEPLOY_KIND])
    done.refresh_from_db()
    assert done.state == State.SUCCEEDED, (done.reason, done.steps)
    return done


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel")
def test_a_release_failing_on_one_host_of_two_is_judged_on_the_sum_and_rolled_back_on_both(
    org: Organization,
    shop: Service,
    machine: switch.Machine,
    other: switch.Machine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """This machine and a second host (its own supervisord and Caddy, standing for an SSH
    host: the SSH part is the test above's): the new release fails on the second only."""
    failing: set[str] = set()
    there = GatedPlace(other, SSH_HOST, failing, EVERY_THIRD_FAILS)

    def place_for(host: Host) -> places.Place:
        if host.local:
            return places.LocalPlace(machine)
        return GatedPlace(other, host.name, failing, EVERY_THIRD_FAILS)

    monkeypatch.setattr(releases, "place_for", place_for)
    monkeypatch.setattr(watch, "place_of_host", lambda host: there)
    monkeypatch.setattr(releases, "GATE", dataclasses.replace(QUICK_GATE, seconds=4))
    services.set_watch(shop, 3, 20, 5.0, 3.0, SYSTEM)
    services.set_service_hosts(shop, [services.this_machine(org), ready_host(org)], SYSTEM)
    repo = tmp_path / "repo"
    committed(shop, repo, "v1")
    ports = (listen_port(machine), listen_port(other))
    loads = [Load(port, "shop.test", slow=0).start() for port in ports]
    try:
        failing.add("v2")
        failed = watched(committed(shop, repo, "v2"))
        serving = {fetch(port, "shop.test")[1].split()[0] for port in ports for _ in range(3)}
    finally:
        for load in loads:
            load.stop()
    assert failed.state == WatchState.ROLLED_BACK, failed.verdict
    assert serving == {"v1"}  # on both hosts
    here, away = failed.hosts
    assert here["name"] == "this machine" and away["name"] == SSH_HOST
    assert here["errors"] == 0 and away["errors"] * 4 > away["requests"] > 0
    # Judged on the sum of both hosts' answers, each host's part said.
    assert failed.requests == here["requests"] + away["requests"]
    assert failed.errors == away["errors"]
    said = r"; by host: this machine: 0 of [\d,]+ answers 5xx, \d+ ms on average; "
    said += rf"{re.escape(SSH_HOST)}: [\d,]+ of [\d,]+ answers 5xx"
    assert re.search(said, failed.verdict), failed.verdict
    # Restored once the last host switched back, not the first: that is what it says.
    rollback = failed.rollback
    assert rollback is not None and rollback.all_live_at and rollback.switched_at
    assert failed.detected_at is not None and rollback.all_live_at > rollback.switched_at
    restored = (rollback.all_live_at - failed.detected_at).total_seconds()
    assert failed.verdict.endswith(
        f"live again on every host by {rollback.all_live_at:%H:%M:%S} UTC, {restored:.1f} s "
        f"after it found {failed.deploy.release} worse"
    ), failed.verdict


class ShiftedPlace(places.LocalPlace):
    """A host whose clock is `shift` seconds off this machine's: its Caddy times its
    answers by that clock, and its agent says its own now by it."""

    def __init__(self, machine: switch.Machine, name: str, shift: float) -> None:
        super().__init__(machine, name)
        self.shift = shift

    def counted_from(self, domain: str, offset: int) -> places.Counted:
        found = super().counted_from(domain, offset)
        sums = [dataclasses.replace(s, second=s.second + self.shift) for s in found.sums]
        return places.Counted(sums, found.offset, (found.clock or 0.0) + self.shift)


@pytest.mark.django_db
def test_a_host_whose_clock_is_off_is_read_on_onwatchs_clock_and_its_skew_is_said(
    org: Organization, machine: switch.Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its answers of the last seconds stay in the recent window (90 s behind, they fell
    out of it at once: a release turning bad there was never caught by it)."""
    place = places.LocalPlace(machine)
    site = switching.site(machine)
    place.ensure_ready()
    place.put_site(site)
    record = place.switch(site, switching.release("r1"), print, switch.Gate(seconds=10))
    place.start_counting(site.domain)
    began = time.time()
    for _ in range(3):
        assert fetch(listen_port(machine), site.domain)[0] == 200
    monkeypatch.setattr(watch, "place_of_host", lambda host: ShiftedPlace(machine, host.name, -90))
    entry = watch.host_entry(ready_host(org), SSH_HOST, f"127.0.0.1:{record.port}")
    found = Watch(deploy=Deploy(service=Service(name="shop", domain=site.domain)), hosts=[entry])
    its: list[agent.Sum] = []
    deadline = time.monotonic() + 10
    while sum(s.requests for s in its) < 3 and time.monotonic() < deadline:
        its += watch.read_host(found, entry, machine, began - 60)
        time.sleep(0.1)
    watch.close_links(found)
    assert sum(s.requests for s in its) == 3 and entry["requests"] == 3, entry
    assert abs(entry["skew"] + 90) < 1, entry
    assert all(began - 2 <= s.second <= time.time() for s in its), its
    recent = watch.recent_of(Watch(recent=watch.recent_after([], its, time.time())))
    assert recent.requests == 3
    found.until = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
    assert watch.said(found) == (
        "watching until 12:30:00 UTC: 0 requests answered so far, 0 of them errors; "
        f"{SSH_HOST}'s clock is 90 s behind onwatch's (its answers were timed by onwatch's "
        "clock; set the host's time right: NTP)"
    )
    # Within two seconds it is no news.
    assert watch.skew_said({**entry, "skew": 1.9}) == ""
