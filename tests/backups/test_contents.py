"""Per-table content checksums: recorded at backup time (PostgreSQL: in the dump's own
snapshot; SQLite: on the copy that is uploaded) and compared by drills on the restored
copy. Real PostgreSQL, SQLite and restic."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from onwatch.backups import files, pg, services
from onwatch.backups.contents import checksum_checks
from onwatch.backups.drills import run_drill
from onwatch.backups.models import Outcome, SourceKind
from onwatch.backups.runs import run_backup, snapshot_name
from onwatch.core import postgres
from onwatch.core.models import Organization
from tests.support.backups import PgSource, local_repo, pg_db, pg_parts, pg_source, plan_for

pytestmark = pytest.mark.django_db
__all__ = ["pg_db"]

# Types whose text form depends on session settings: the checksum must not.
MIXED = """
CREATE TABLE mixed (
    id int PRIMARY KEY, at timestamptz, day date, took interval, ratio float8,
    price numeric(12, 2), blob bytea, doc jsonb, note text, cost money
);
INSERT INTO mixed
SELECT g, timestamptz '2024-03-01 12:00+01' + g * interval '37 minutes',
       date '2024-01-01' + g, g * interval '1 day 3 hours', 1.0 / (g + 3),
       g * 1.25, decode(md5(g::text), 'hex'), jsonb_build_object('n', g, 'tags', '[1, 2]'::jsonb),
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'row ' || g END, g * 2.5
FROM generate_series(1, 300) g;
"""

ODD_SESSION = [
    "SET timezone = 'Asia/Tokyo'",
    "SET datestyle = 'German, DMY'",
    "SET intervalstyle = 'sql_standard'",
    "SET extra_float_digits = 0",
    "SET bytea_output = 'escape'",
]


def server_of(db: PgSource) -> postgres.Server:
    host, port, user = pg_parts()
    return postgres.Server(host, port, user, "", db.name)


def test_checksums_do_not_depend_on_row_order_or_session_settings(pg_db: PgSource) -> None:
    with pg_db.connect() as c:
        c.execute(MIXED)
        c.execute("CREATE TABLE shuffled AS SELECT * FROM mixed ORDER BY md5(id::text)")
        plain = pg.table_contents(c)
    with pg_db.connect() as c:
        for statement in ODD_SESSION:
            c.execute(statement)
        odd = pg.table_contents(c)
        # SET LOCAL: the session keeps its own settings for the smoke queries after.
        assert c.execute("SHOW timezone").fetchone() == ("Asia/Tokyo",)
    assert plain == odd
    assert plain.rows["public.mixed"] == plain.rows["public.shuffled"] == 300
    assert plain.checksums["public.mixed"] == plain.checksums["public.shuffled"]
    # money has no hash function: that table is hashed through its text, the others not.
    assert plain.checksums["public.mixed"].startswith("md5:")
    assert plain.checksums["public.orders"].startswith("hash:")
    assert int(plain.checksums["public.mixed"].removeprefix("md5:")) > 0


def test_a_drill_hashes_each_table_the_way_the_backup_did(pg_db: PgSource) -> None:
    with pg_db.connect() as c:
        own = pg.table_contents(c)
        told = pg.table_contents(c, {"public.orders": "md5:1"})
        c.execute("INSERT INTO orders (customer, total) VALUES (1, 2)")
        after = pg.table_contents(c, told.checksums)
    assert own.checksums["public.orders"].startswith("hash:")
    assert told.checksums["public.orders"].startswith("md5:")
    assert told.checksums["public.customers"] == own.checksums["public.customers"]
    assert after.checksums["public.orders"].startswith("md5:")
    assert after.checksums["public.orders"] != told.checksums["public.orders"]


def test_one_changed_value_changes_the_checksum_but_not_the_count(pg_db: PgSource) -> None:
    with pg_db.connect() as c:
        before = pg.table_contents(c)
        c.execute("UPDATE orders SET total = total + 0.01 WHERE id = 123")
        after = pg.table_contents(c)
    assert after.rows == before.rows
    assert after.checksums["public.customers"] == before.checksums["public.customers"]
    assert after.checksums["public.orders"] != before.checksums["public.orders"]


def test_contents_in_an_exported_snapshot_ignore_later_writes(pg_db: PgSource) -> None:
    with pg_db.connect() as c:
        then = pg.table_contents(c)
    with pg_db.connect() as exporter, pg_db.connect() as writer:
        snapshot = pg.export_snapshot(exporter)
        writer.execute("INSERT INTO orders (customer, total) VALUES (1, 99)")
        writer.execute("UPDATE customers SET name = 'eve' WHERE id = 3")
        in_snapshot = pg.start_contents(server_of(pg_db), snapshot).result(timeout=60)
        exporter.execute("COMMIT")
        now = pg.table_contents(writer)
    assert in_snapshot == then
    assert now.rows["public.orders"] == 251
    assert now.checksums["public.customers"] != then.checksums["public.customers"]


def test_a_postgresql_backup_records_checksums_and_its_drill_matches_them(
    org: Organization, pg_db: PgSource, tmp_path: Path
) -> None:
    with pg_db.connect() as c:
        c.execute(MIXED)
        source_now = pg.table_contents(c)
    plan = plan_for(pg_source(org, pg_db), [local_repo(org, tmp_path / "repo")])
    run = run_backup(plan, print)
    assert run.state == Outcome.SUCCEEDED, run.error
    assert run.contents == {**source_now.as_json(), "snapshot_path": f"/{snapshot_name(plan)}"}
    d = run_drill(plan, print)
    assert d.state == Outcome.SUCCEEDED, d.error
    sums = {c["check"]: c["ok"] for c in d.checks if c["check"].startswith("checksum of")}
    assert sums == {
        "checksum of public.customers": True,
        "checksum of public.mixed": True,
        "checksum of public.orders": True,
    }


def sqlite_rows(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (a, b, c)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        db.commit()
    return path


def test_sqlite_checksums_ignore_row_order_and_see_a_changed_value(tmp_path: Path) -> None:
    rows: list[tuple[object, ...]] = [(1, "x", b"\x00\x01"), (2.5, None, "y"), (3, 1e-30, "")]
    one = files.sqlite_contents(sqlite_rows(tmp_path / "one.sqlite3", rows))
    other = files.sqlite_contents(sqlite_rows(tmp_path / "other.sqlite3", rows[::-1]))
    changed = files.sqlite_contents(
        sqlite_rows(tmp_path / "changed.sqlite3", [*rows[:2], (3, 1e-30, " ")])
    )
    assert one == other and one.rows == {"t": 3}
    assert changed.rows == one.rows and changed.checksums != one.checksums


def test_a_sqlite_backup_records_checksums_and_its_drill_matches_them(
    org: Organization, tmp_path: Path
) -> None:
    db = sqlite_rows(tmp_path / "app.sqlite3", [(i, f"r{i}", i / 7) for i in range(500)])
    source = services.add_source(org, "app", SourceKind.SQLITE, path=str(db))
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    run = run_backup(plan, print)
    assert run.state == Outcome.SUCCEEDED, run.error
    assert run.contents == {
        **files.sqlite_contents(db).as_json(),
        "snapshot_path": f"/{snapshot_name(plan)}",
    }
    d = run_drill(plan, print)
    assert d.state == Outcome.SUCCEEDED, d.error
    assert {"check": "checksum of t", "ok": True, "detail": "same rows as at backup"} in d.checks


def test_checksum_checks_name_the_table_that_differs_or_is_missing() -> None:
    found = checksum_checks({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9"})
    assert [(c["check"], c["ok"]) for c in found] == [
        ("checksum of a", True),
        ("checksum of b", False),
        ("checksum of c", False),
    ]
    assert found[2]["detail"] == "missing from the restored copy"
    # A run from before checksums existed: nothing to compare, nothing fails.
    assert checksum_checks({}, {"a": "1"}) == []
