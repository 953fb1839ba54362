"""ONWATCH_WEB_WORKERS: several web processes on one port, for more pings per second."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.support.child import call
from tests.support.child import uptime as child_uptime
from tests.support.procs import Running, alive, isolated, wait_http


def web_workers(pid: int) -> list[int]:
    """The worker processes uvicorn started (not multiprocessing's resource tracker)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for kid in kids:
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(kid))
    return found


def test_two_web_workers_share_the_port_store_every_ping_and_stop_together(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, ONWATCH_WEB_WORKERS="2") as env:
        ping_id = json.loads(call(child_uptime.add_heartbeat, env, "Acme", "nightly", migrate=True))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            workers = web_workers(web.proc.pid)
            deadline = time.monotonic() + 30
            while len(workers) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                workers = web_workers(web.proc.pid)
            assert len(workers) == 2, workers
            # The managing process ran the start-up checks in a child: no Django apps here.
            manager_kib = int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{web.proc.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            )
            assert manager_kib < 60_000, manager_kib
            for _ in range(40):
                with urllib.request.urlopen(f"{web.base_url}/ping/{ping_id}", timeout=10) as r:
                    assert r.status == 200
            assert json.loads(call(child_uptime.print_ping_count, env)) == 40
            started = time.monotonic()
            web.proc.send_signal(signal.SIGTERM)
            web.proc.wait(timeout=15)
            assert time.monotonic() - started < 10
            assert not [pid for pid in workers if alive(pid)]
