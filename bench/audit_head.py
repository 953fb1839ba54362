"""What the audit head file costs per audit entry, against what a sign-in costs anyway.

    .venv/bin/python bench/audit_head.py [--entries 200] [--dir /path/on/the/data/disk]

In a Django process of its own with a temporary ONWATCH_DATA_DIR under `--dir` (SQLite,
migrated first, not timed; the head file's fsync lands on that disk, so point it at the
disk a real data directory would use), times `--entries` calls of `audit.record()`:

- as onwatch runs it: the entry commits, then the head file advances (lock, read, one
  query that the old head's entry is still there, write, fsync, rename);
- the same with the head advance left out, the baseline;
- the head file write alone (`audit_head._write`);
- one password check with the configured hasher, which every password sign-in pays.

Prints the median of each in milliseconds, the head's share of an entry, and its share of a
sign-in (one password check plus one entry). The machine's load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(n: int) -> dict[str, float]:
    from django.contrib.auth.hashers import check_password, make_password

    from onwatch.core import audit, audit_head
    from onwatch.core.audit_head import Head

    with_head = median_ms(lambda: audit.record("bench", actor="bench@example.com"), n)
    advance = audit_head.advance
    audit_head.advance = lambda new: None  # the baseline: entries without their witness
    try:
        without = median_ms(lambda: audit.record("bench", actor="bench@example.com"), n)
    finally:
        audit_head.advance = advance
    write = median_ms(lambda: audit_head._write(Head(1, "0" * 64)), n)
    hashed = make_password("correct horse battery staple")
    password = median_ms(lambda: check_password("correct horse battery staple", hashed), 5)
    return {"with_head": with_head, "without": without, "write": write, "password": password}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where the temporary data directory goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onwatch-bench-", dir=args.dir) as tmp:
        # onwatch makes its own secret key and key file in the data directory.
        os.environ["ONWATCH_DATA_DIR"] = str(Path(tmp) / "data")
        for name in ("DATABASE_URL", "SECRET_KEY", "ONWATCH_KEY_FILE", "ONWATCH_AUDIT_HEAD_FILE"):
            os.environ.pop(name, None)
        sys.path.insert(0, str(ROOT))
        from onwatch.startup import prepare

        prepare(migrate=True)
        f = measure(args.entries)
    head = f["with_head"] - f["without"]
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"audit entry with head file: {f['with_head']:.2f} ms")
    print(f"audit entry without:        {f['without']:.2f} ms")
    print(f"head file write alone:      {f['write']:.2f} ms")
    print(f"password check:             {f['password']:.2f} ms")
    sign_in = f["password"] + f["with_head"]
    print(
        f"summary: the head file adds {head:.2f} ms to an entry "
        f"({head / f['with_head']:.0%} of it) and {head / sign_in:.1%} to a password sign-in"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
