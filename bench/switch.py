"""Failed requests while a site switches releases behind Caddy, under steady load.

    .venv/bin/python bench/switch.py [--switches 20] [--broken 3] [--reloads 10]

Runs the small app of tests/support/switch_app.py under onwatch's supervisord behind its
Caddy (both in a temporary folder, on free loopback ports), sends requests without pause
(kept-alive GETs, a new connection per GET, POSTs, 1.5 s requests always in flight,
and kept-alive connections idle 0.2 s between requests, as a browser's are),
and switches the site to a new release --switches times, with --broken releases that
never get healthy in between. Prints requests answered, failed requests (target 0),
answers from an old release after its switch had ended (target 0), how long the
switches took, and beside them what onwatch itself counted during the switches (Caddy's
counts, as each deploy records them). Then, as the baseline the design avoids, changes
Caddy's configuration --reloads times under the same load (what a switch by admin API
would do) and counts the failures that costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onwatch.deploys import caddy  # noqa: E402
from onwatch.deploys.switch import Gate, Machine, Switch, SwitchFailed, switch  # noqa: E402
from tests.support.load import Load, Tally  # noqa: E402
from tests.support.switching import listen_port, own_machine, release, site  # noqa: E402


def switches(machine: Machine, shop: caddy.Site, count: int, broken: int) -> None:
    load = Load(
        listen_port(machine), shop.domain, 4, 2, 2, 2, 1.5, keep_log=True, pausing=8
    ).start()
    done: list[tuple[float, Switch]] = []
    refused: list[float] = []
    broken_every = count // broken if broken else 0
    try:
        for n in range(1, count + 1):
            done.append((time.monotonic(), switch(machine, shop, release(f"r{n}"))))
            if broken_every and n % broken_every == 0 and len(refused) < broken:
                refused.append(refuse(machine, shop, n))
    finally:
        tally = load.stop()
    report(tally, done, refused)


def refuse(machine: Machine, shop: caddy.Site, n: int) -> float:
    started = time.monotonic()
    try:
        switch(machine, shop, release(f"broken{n}", HEALTH="fail"), gate=Gate(seconds=5))
    except SwitchFailed:
        return time.monotonic() - started
    raise AssertionError("a release that never got healthy was switched to")


def late_answers(tally: Tally, done: list[tuple[float, Switch]]) -> int:
    """Answers from an older release to requests sent after a newer one's switch ended
    (the release a later switch was starting answers early, and rightly)."""
    order = {record.release: n for n, (_, record) in enumerate(done)}
    ends = [(started + record.seconds, order[record.release]) for started, record in done]
    late = 0
    for sent, answer in tally.log or []:
        live = [n for end, n in ends if end <= sent]
        late += bool(live) and order.get(answer, -1) < live[-1]
    return late


def report(tally: Tally, done: list[tuple[float, Switch]], refused: list[float]) -> None:
    seconds = [record.seconds for _, record in done[1:]]
    drains = [record.steps[-1].detail for _, record in done[1:]]
    print(f"switches                     {len(done) - 1} (after the first release)")
    print(f"requests answered 200        {tally.ok} ({tally.slow_ok} of them 1.5 s long)")
    print(f"failed requests              {tally.failed} {dict(tally.errors) or ''}")
    print(f"old answers after a switch   {late_answers(tally, done)}")
    print(f"onwatch counted              {felt_totals([record for _, record in done])}")
    if seconds:
        print(
            f"switch duration              median {statistics.median(seconds):.2f} s, "
            f"max {max(seconds):.2f} s"
        )
        print(f"drains                       {sorted(set(drains))[:3]}")
        print(f"steps, median                {step_medians([r for _, r in done[1:]])}")
    if refused:
        print(
            f"never-healthy releases       {len(refused)} refused, "
            f"median {statistics.median(refused):.1f} s each (gate 5 s)"
        )


def felt_totals(records: list[Switch]) -> str:
    """What onwatch itself recorded of the switches (Caddy's counts, switch.Felt), to read
    beside the clients' own: it counts only while a switch runs, the clients all along."""
    felts = [r.felt for r in records if r.felt is not None]
    measured = [f for f in felts if not f.unmeasured]
    unmeasured = len(records) - len(measured)
    return (
        f"{sum(f.served for f in measured)} served during the switches, "
        f"{sum(f.failed for f in measured)} failed, "
        f"{sum(f.app_errors for f in measured)} app errors, "
        f"{sum(f.mixed for f in measured)} mixed"
        + (f"; {unmeasured} switches not measured" if unmeasured else "")
    )


def step_medians(records: list[Switch]) -> str:
    names = [s.name for s in records[0].steps]
    took = {
        name: statistics.median(
            (s.ended - s.started).total_seconds()
            for r in records
            for s in r.steps
            if s.name == name and s.ended
        )
        for name in names
    }
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items())


def reloads(machine: Machine, shop: caddy.Site, count: int) -> None:
    load = Load(listen_port(machine), shop.domain, 4, 2, 2, 2, 1.5, pausing=8).start()
    try:
        for n in range(count):
            path = "/health" if n % 2 else "/health?reload"
            machine.caddy.put_site(caddy.Site(shop.domain, shop.ports, path))
            time.sleep(1)
    finally:
        tally = load.stop()
    print(f"baseline: {count} config reloads under the same load")
    print(f"requests answered 200        {tally.ok}")
    print(f"failed requests              {tally.failed} {dict(tally.errors) or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--broken", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=10)
    args = parser.parse_args()
    with own_machine() as machine:
        machine.ensure_running()
        shop = site(machine)
        machine.caddy.put_site(shop)
        switches(machine, shop, args.switches + 1, args.broken)
        if args.reloads:
            reloads(machine, shop, args.reloads)


if __name__ == "__main__":
    main()
