"""What a deploy's work costs on an SSH host, through its agent, beside the same on this
machine.

    .venv/bin/python bench/remote.py [--switches 5] [--asks 200] [--megabytes 20]

The host is on this machine (tests/support/ssh_hosts.py: a real sshd on loopback signing
in as whoever runs this, a folder and a Caddy of its own), so the figures are the agent's
and ssh's costs, not a network's. Prints the first connection (the agent uploaded) and a
later one (the agent kept); the round trip of a small request over the connection (p50,
p99); a tree of --megabytes received (MB/s); then --switches switches under steady load
through the host's Caddy: requests served, failed (target 0), what the host's Caddy
counted, and how long a switch took (p50, max) beside the same switches run here directly
(switch.py), with the ratio. The load average is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onwatch.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-" + "k" * 50)
os.environ.setdefault("ONWATCH_DATA_DIR", tempfile.mkdtemp(prefix="ow-bench-remote-"))

import django  # noqa: E402

django.setup()  # places.py reaches the models; nothing here touches a database

from onwatch.deploys import caddy, remote  # noqa: E402
from onwatch.deploys.switch import Gate, Step, Switch, switch  # noqa: E402
from tests.support.load import Load, Tally  # noqa: E402
from tests.support.ssh_hosts import SshHost, app_tree, release_in, ssh_host  # noqa: E402
from tests.support.switching import own_machine, release, site  # noqa: E402


def timed[T](body: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    done = body()
    return time.monotonic() - started, done


def connections(host: SshHost) -> None:
    for old in host.dir.glob("agent-*.pyz"):
        old.unlink()
    for what in ("first connection (agent uploaded)", "later connection (agent kept)"):
        place = host.place()
        took, _ = timed(partial(place.free_ports, 1))
        place.close()
        print(f"{what}: {took:.2f} s")
    print(f"agent: {len(remote.agent_archive()[1]) / 1024:.0f} KB")


def round_trips(place: remote.RemotePlace, asks: int) -> None:
    folder = place.release_folder(1, 1)
    took = sorted(timed(lambda: place.has_folder(folder))[0] for _ in range(asks))
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    print(f"round trip of a request ({asks}): p50 {statistics.median(took) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")  # fmt: skip


def receiving(place: remote.RemotePlace, megabytes: int, scratch: Path) -> None:
    tree = scratch / "big"
    tree.mkdir()
    for n in range(megabytes):
        (tree / f"part-{n}").write_bytes(os.urandom(1024 * 1024))
    took, _ = timed(lambda: place.receive(place.release_folder(1, 2), tree))
    print(f"received {megabytes} MB in {took:.2f} s: {megabytes / took:.0f} MB/s")


def remote_switches(
    host: SshHost, place: remote.RemotePlace, count: int, scratch: Path
) -> list[float]:
    first, second = place.free_ports(2)
    shop = caddy.Site("shop.test", (first, second), "/health")
    place.ensure_ready()
    place.put_site(shop)
    folder = place.release_folder(1, 3)
    place.receive(folder, app_tree(scratch / "app"))
    place.switch(shop, release_in(folder, "r0"), quiet, Gate())
    load = Load(host.options.http_port, shop.domain, 4, 2, 2, 2, 1.5).start()
    try:
        done = [
            timed(partial(place.switch, shop, release_in(folder, f"r{n}"), quiet, Gate()))
            for n in range(1, count + 1)
        ]
    finally:
        tally = load.stop()
    return report("on the SSH host", tally, done)


def local_switches(count: int) -> list[float]:
    with own_machine() as machine:
        shop = site(machine)
        machine.ensure_running()
        machine.caddy.put_site(shop)
        switch(machine, shop, release("r0"))
        load = Load(machine.options.port, shop.domain, 4, 2, 2, 2, 1.5).start()
        try:
            done = [
                timed(partial(switch, machine, shop, release(f"r{n}"))) for n in range(1, count + 1)
            ]
        finally:
            tally = load.stop()
    return report("on this machine", tally, done)


def quiet(step: Step) -> None:
    pass


def report(where: str, tally: Tally, done: list[tuple[float, Switch]]) -> list[float]:
    seconds = [took for took, _ in done]
    counted = [record.felt for _, record in done if record.felt]
    caddy_failed = sum(f.failed for f in counted)
    print(
        f"{len(done)} switches {where}: {tally.ok + tally.failed} requests, {tally.failed} "
        f"failed (target 0), Caddy counted {sum(f.served for f in counted)} served and "
        f"{caddy_failed} failed; a switch took p50 {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s"
    )
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switches", type=int, default=5)
    parser.add_argument("--asks", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=20)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with ssh_host() as host, tempfile.TemporaryDirectory() as scratch:
        connections(host)
        place = host.place()
        try:
            round_trips(place, args.asks)
            receiving(place, args.megabytes, Path(scratch))
            remote_seconds = remote_switches(host, place, args.switches, Path(scratch))
        finally:
            place.close()
    here = local_switches(args.switches)
    ratio = statistics.median(remote_seconds) / statistics.median(here)
    print(f"a switch on the SSH host takes {ratio:.2f}x as long as on this machine (p50)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
