"""How long `onwatch up` takes to answer, and how much memory it holds when idle.

    .venv/bin/python bench/startup.py [--runs 3]

Starts onwatch on a fresh data directory (first run: migrations included) and again on the
same directory (a normal restart), each time measuring until /health/ answers, then sums
the resident memory of the supervisor and its children after a few idle seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def memory_kib(pid: int) -> tuple[int, int]:
    """(resident, proportional) set size. Summed over processes, resident counts the
    shared interpreter and libraries once per process; proportional splits them, so its
    sum is what the machine really spends."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def tree(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if kids.exists():
        for child in kids.read_text().split():
            found += tree(int(child))
    return found


def start_and_measure(
    data_dir: Path, idle: float, web_workers: int
) -> tuple[float, tuple[int, int], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONWATCH_")}
    env.pop("DATABASE_URL", None)
    env.pop("SECRET_KEY", None)
    env.update(
        ONWATCH_DATA_DIR=str(data_dir),
        ONWATCH_PORT=str(port),
        ONWATCH_WEB_WORKERS=str(web_workers),
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "onwatch", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=1):
                    break
            except OSError:
                if time.monotonic() - started > 60:
                    raise SystemExit("onwatch did not answer within 60 s") from None
                time.sleep(0.05)
        ready = time.monotonic() - started
        time.sleep(idle)
        pids = tree(proc.pid)
        sizes = [memory_kib(p) for p in pids]
        return ready, (sum(r for r, _ in sizes), sum(p for _, p in sizes)), len(pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument(
        "--web-workers", type=int, default=2, help="ONWATCH_WEB_WORKERS (onwatch's default: 2)"
    )
    args = parser.parse_args()
    first, again, rss, pss = [], [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            t, _, _ = start_and_measure(data, 0, args.web_workers)
            first.append(t)
            t, (r, p), n = start_and_measure(data, args.idle, args.web_workers)
            again.append(t)
            rss.append(r)
            pss.append(p)
    print(f"first start (creates data dir, migrates): {[round(t, 2) for t in first]} s")
    print(f"restart on existing data:                 {[round(t, 2) for t in again]} s")
    print(f"idle memory, proportional ({n} processes): {[m // 1024 for m in pss]} MiB")
    print(f"idle memory, resident summed:             {[m // 1024 for m in rss]} MiB")
    print(
        f"summary: first start {min(first):.2f} s, restart {min(again):.2f} s, "
        f"idle memory {min(pss) / 1024:.0f} MiB (PSS; {min(rss) / 1024:.0f} MiB RSS summed) "
        f"in {n} processes"
    )


if __name__ == "__main__":
    main()
