"""ONWATCH_WEB_WORKERS: several web processes on one port, forked from one parent that
loaded Django once (onwatch/prefork.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from onwatch.prefork import forker
from tests.support.child import call
from tests.support.child import uptime as child_uptime
from tests.support.procs import Running, alive, isolated, run, wait_http


def web_workers(pid: int) -> list[int]:
    """The web workers `onwatch web` forked: its children."""
    try:
        return [int(kid) for kid in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_for_workers(pid: int, count: int, other_than: tuple[int, ...] = ()) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        workers = [w for w in web_workers(pid) if alive(w)]
        if len(workers) == count and not set(workers) & set(other_than):
            return workers
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)


def memory_kib(pid: int) -> dict[str, int]:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {line.split()[0].rstrip(":"): int(line.split()[1]) for line in rollup}


def ping_ok(base_url: str, ping_id: str) -> None:
    with urllib.request.urlopen(f"{base_url}/ping/{ping_id}", timeout=10) as r:
        assert r.status == 200


def test_two_web_workers_share_the_port_store_every_ping_and_stop_together(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="2") as env:
        ping_id = json.loads(call(child_uptime.add_heartbeat, env, "Acme", "nightly", migrate=True))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            workers = wait_for_workers(web.proc.pid, 2)
            for _ in range(40):
                ping_ok(web.base_url, ping_id)
            assert json.loads(call(child_uptime.print_ping_count, env)) == 40
            started = time.monotonic()
            web.proc.send_signal(signal.SIGTERM)
            web.proc.wait(timeout=15)
            assert time.monotonic() - started < 10
            assert not [pid for pid in workers if alive(pid)]


def test_forked_web_workers_share_the_memory_of_what_their_parent_loaded(
    tmp_path: Path,
) -> None:
    # Spawned anew, each worker imported Python, Django and every app itself: some 70 MiB
    # of its own. Forked after the parent loaded them, a worker owns only what it changed.
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="2") as env:
        ping_id = json.loads(call(child_uptime.add_heartbeat, env, "Acme", "nightly", migrate=True))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            workers = wait_for_workers(web.proc.pid, 2)
            for _ in range(20):
                ping_ok(web.base_url, ping_id)
                wait_http(web.base_url + "/health/")
            for pid in workers:
                own = memory_kib(pid)
                private = own["Private_Clean"] + own["Private_Dirty"]
                assert private < 30 * 1024, own
                assert own["Shared_Clean"] + own["Shared_Dirty"] > 30 * 1024, own
            total = sum(memory_kib(pid)["Pss"] for pid in [web.proc.pid, *workers])
            assert total < 140 * 1024, total


def test_a_crashed_web_worker_is_replaced_and_the_port_keeps_answering(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="2") as env:
        ping_id = json.loads(call(child_uptime.add_heartbeat, env, "Acme", "nightly", migrate=True))
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            first, second = wait_for_workers(web.proc.pid, 2)
            os.kill(first, signal.SIGKILL)
            web.wait_for(f"(pid {first}) was killed by SIGKILL; restarting it in 1 s")
            # Meanwhile the other worker takes every connection.
            for _ in range(10):
                ping_ok(web.base_url, ping_id)
            replaced = wait_for_workers(web.proc.pid, 2, other_than=(first,))
            assert second in replaced
            [new] = [pid for pid in replaced if pid != second]
            os.kill(second, signal.SIGKILL)
            web.wait_for(f"(pid {second}) was killed by SIGKILL; restarting it in 1 s")
            # The replacement alone serves now: it inherited the listening socket.
            for _ in range(10):
                ping_ok(web.base_url, ping_id)
            assert alive(new)
            assert json.loads(call(child_uptime.print_ping_count, env)) == 20


def test_web_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True, ONWATCH_WEB_WORKERS="2") as env:
        assert run(["migrate"], env).returncode == 0
        with Running(["web"], env) as web:
            wait_http(web.base_url + "/health/", timeout=60)
            workers = wait_for_workers(web.proc.pid, 2)
            os.kill(web.proc.pid, signal.SIGKILL)
            web.proc.wait()
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert [pid for pid in workers if alive(pid)] == []


def test_no_web_worker_is_forked_while_a_thread_runs() -> None:
    # The child would hold none of the threads, but every lock one of them held, forever.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy")
    thread.start()
    try:
        with socket.socket() as sock:
            fork = forker(uvicorn.Config("onwatch.asgi:application"), sock)
            with pytest.raises(RuntimeError, match=r"while threads run: .*busy"):
                fork()
    finally:
        stop.set()
        thread.join()
