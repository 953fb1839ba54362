"""A PostgreSQL backup and restore drill at size: onwatch against the same work by hand.

    .venv/bin/python bench/backup.py [--rows 2000000] [--rounds 1]

Starts a throwaway PostgreSQL (initdb in a temporary directory as the postgres user, on a
free port, fsync off as in scripts/test) and loads a shop database of `--rows` rows:
customers (a tenth of the rows: name, email, country, balance, sign-up time) and orders
(the rest: customer, time, status, total, note), with primary keys, a foreign key and an
index on orders' customer, built with generate_series in the server.

Then, per round, both ways against the same server, each into a fresh local restic
repository (restic init is not timed on either side):

- onwatch: a real Plan with that one repository; `run_backup`, then `run_drill`
  (a scratch database on the same server, restored, counted, checksummed, smoke-queried
  and dropped), timed around the two calls in a Django process of its own (a temporary
  ONWATCH_DATA_DIR, as the other benches use; start-up and migrations are not timed);
- by hand: `pg_dump --format=custom | restic backup --stdin`, then `createdb` and
  `restic dump latest … | pg_restore` into a new database (dropping it is not timed).

Prints each side's backup, restore and total times, onwatch's breakdown (the drill's
fetch, restore and verify phases) and the ratio onwatch / by hand, with a one-line
summary last. Target: ratio ≤ 1.15. The machine's load average is printed too: the
figures are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.procs import django, free_port, isolated  # noqa: E402

TARGET_RATIO = 1.15
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]

LOAD = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, country text NOT NULL,
    balance numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL
);
INSERT INTO customers
SELECT g, 'Customer ' || g, 'customer' || g || '@' || substr(md5(g::text), 1, 8) || '.example',
       (ARRAY['DE', 'FR', 'NL', 'PL', 'ES', 'IT'])[g % 6 + 1], round((random() * 5000)::numeric, 2),
       timestamptz '2020-01-01' + g * interval '7 minutes'
FROM generate_series(1, {customers}) g;
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
    placed_at timestamptz NOT NULL, status text NOT NULL, total numeric(12, 2) NOT NULL,
    note text
);
INSERT INTO orders
SELECT g, g % {customers} + 1, timestamptz '2021-01-01' + g * interval '41 seconds',
       (ARRAY['paid', 'shipped', 'delivered', 'refunded'])[g % 4 + 1],
       round((random() * 900 + 5)::numeric, 2),
       CASE WHEN g % 5 = 0 THEN 'gift wrap, ' || md5(g::text) END
FROM generate_series(1, {orders}) g;
CREATE INDEX orders_customer ON orders (customer_id);
"""

ONWATCH = """
import time
from onwatch.backups import services
from onwatch.backups.drills import run_drill
from onwatch.backups.models import SourceKind
from onwatch.backups.runs import run_backup
from onwatch.core.models import Organization

org = Organization.objects.create(name="Bench")
repository = services.add_repository(org, "local", "{repo}", provider="hetzner")
source = services.add_source(
    org, "shop", SourceKind.POSTGRESQL, host="127.0.0.1", port={port}, database="shop",
    username="postgres", provider="ovh",
    smoke_queries=[{{"sql": "SELECT count(*) FROM customers", "expect": [[{customers}]]}}],
)
plan = services.add_plan(source, "nightly", [repository], rto_minutes=60)
lines = []
started = time.monotonic()

def log(line):
    lines.append(f"{{time.monotonic() - started:7.2f}} s  {{line}}")

run = run_backup(plan, log)
backed_up = time.monotonic()
drill = run_drill(plan, log)
done = time.monotonic()
print(json.dumps({{
    "backup": backed_up - started, "drill": done - backed_up,
    "run_error": run.error, "drill_error": drill.error, "verified": drill.verified,
    "fetch": drill.fetch_seconds, "restore": drill.restore_seconds,
    "verify": drill.verify_seconds, "checks": len(drill.checks),
    "bytes": run.bytes_processed, "log": lines,
}}))
"""


@dataclass
class Server:
    port: int

    def psql(self, sql: str, database: str = "postgres") -> str:
        return sh(
            [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql]
        )  # fmt: skip


def sh(args: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else list(args)


@contextmanager
def postgresql() -> Iterator[Server]:
    base = Path(tempfile.mkdtemp(prefix="onwatch-bench-pg-"))
    if os.getuid() == 0:
        shutil.chown(base, "postgres")
    port = free_port()
    data = base / "data"
    sh(as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8"))  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
    )
    sh(as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                   "-o", options, "start"))  # fmt: skip
    try:
        yield Server(port)
    finally:
        subprocess.run(
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def by_hand(server: Server, work: Path, n: int) -> dict[str, float]:
    repo = work / f"manual-repo-{n}"
    env = {**os.environ, "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": "bench-only-pw"}
    env["RESTIC_CACHE_DIR"] = str(work / "manual-cache")
    sh(["restic", "init", "-q"], env)
    target = f"shop_restored_{n}"
    pg = f"-h 127.0.0.1 -p {server.port} -U postgres"
    started = time.monotonic()
    sh(["bash", "-o", "pipefail", "-c",
        f"{PG_BIN}/pg_dump --format=custom {pg} shop"
        " | restic backup -q --stdin --stdin-filename shop.pgdump"], env)  # fmt: skip
    backed_up = time.monotonic()
    sh([str(PG_BIN / "createdb"), *pg.split(), target])
    sh(["bash", "-o", "pipefail", "-c",
        "restic dump latest shop.pgdump"
        f" | {PG_BIN}/pg_restore --no-owner --no-privileges --exit-on-error {pg} -d {target}"],
       env)  # fmt: skip
    done = time.monotonic()
    restored = server.psql("SELECT count(*) FROM orders", target).strip()
    server.psql(f"DROP DATABASE {target}")
    return {"backup": backed_up - started, "drill": done - backed_up, "orders": float(restored)}


def with_onwatch(server: Server, work: Path, n: int, customers: int) -> dict[str, object]:
    with isolated(work / f"onwatch-{n}") as env:
        code = ONWATCH.format(
            repo=work / f"onwatch-repo-{n}", port=server.port, customers=customers
        )
        found: dict[str, object] = json.loads(django(code, env, migrate=True, timeout=3600))
    if found["run_error"] or found["drill_error"] or not found["verified"]:
        raise SystemExit(f"onwatch's run or drill failed: {found}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="customers + orders")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both sides, alternating")
    parser.add_argument("--show-log", action="store_true", help="print onwatch's run and drill log")
    args = parser.parse_args()
    customers = args.rows // 10
    orders = args.rows - customers

    with postgresql() as server, tempfile.TemporaryDirectory(prefix="onwatch-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        server.psql("CREATE DATABASE shop")
        server.psql(LOAD.format(customers=customers, orders=orders), "shop")
        server.psql("VACUUM ANALYZE", "shop")
        size = server.psql("SELECT pg_size_pretty(pg_database_size('shop'))").strip()
        print(
            f"loaded {customers:,} customers + {orders:,} orders ({size}) in "
            f"{time.monotonic() - started:.1f} s on PostgreSQL at port {server.port}"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f} (2 cores)")

        ratios, mine, theirs = [], [], []
        for n in range(args.rounds):
            # Alternate who goes first, so neither always gets the warmer cache.
            sides = ["onwatch", "manual"] if n % 2 else ["manual", "onwatch"]
            results: dict[str, dict[str, object]] = {}
            for side in sides:
                if side == "manual":
                    results[side] = dict(by_hand(server, work, n))
                else:
                    results[side] = with_onwatch(server, work, n, customers)
            ow, hand = results["onwatch"], results["manual"]
            ow_total = float(ow["backup"]) + float(ow["drill"])  # type: ignore[arg-type]
            hand_total = float(hand["backup"]) + float(hand["drill"])  # type: ignore[arg-type]
            ratio = ow_total / hand_total
            ratios.append(ratio)
            mine.append(ow_total)
            theirs.append(hand_total)
            print(f"round {n + 1} ({' first, '.join(sides)} second):")
            print(
                f"  by hand:  backup {hand['backup']:6.1f} s, restore {hand['drill']:6.1f} s, "
                f"total {hand_total:6.1f} s"
            )
            print(
                f"  onwatch:  backup {ow['backup']:6.1f} s, drill   {ow['drill']:6.1f} s, "
                f"total {ow_total:6.1f} s  (drill: fetch {ow['fetch']:.1f} s, restore "
                f"{ow['restore']:.1f} s, verify {ow['verify']:.1f} s, {ow['checks']} checks; "
                f"{int(ow['bytes']) / 1e6:.0f} MB dump)"  # type: ignore[call-overload]
            )
            print(f"  ratio onwatch / by hand: {ratio:.3f}")
            if args.show_log:
                for line in ow["log"]:  # type: ignore[attr-defined]
                    print("   ", line)
            print(f"  load average: {os.getloadavg()[0]:.2f}")

    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= TARGET_RATIO else "missed"
    print(
        f"summary: {args.rows:,} rows; onwatch backup + drill {statistics.median(mine):.1f} s, "
        f"by hand {statistics.median(theirs):.1f} s; ratio {ratio:.3f} "
        f"(median of {len(ratios)}; target ≤ {TARGET_RATIO}: {verdict})"
    )


if __name__ == "__main__":
    main()
