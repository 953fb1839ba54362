"""MariaDB sources end to end against a real mariadbd: backups whose counts and checksums
line up with the dump, drills into scratch databases, faults, `onwatch restore`, the
password kept out of argv, and the checks made before the first run."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.backups import checks, mariadb, restic, restores, services, targets
from onwatch.backups.models import Outcome, RunCopy, SourceKind
from onwatch.core.mariadb import (
    Version,
    drop_database,
    parse_version,
    tool_version,
    version_problem,
)
from onwatch.core.models import JobState, Organization
from tests.support.backups import (
    assert_failed_with_alert,
    backup,
    channel,
    drill,
    local_repo,
    make_plan,
    plan_for,
)
from tests.support.mariadb import (
    MariaDB,
    MariaSource,
    maria_draft,
    maria_source,
    mariadb_server,
    wrapped_tools,
)
from tests.support.procs import free_port, run

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = [pytest.mark.once, pytest.mark.django_db, pytest.mark.usefixtures("channel")]
__all__ = ["channel", "mariadb_server"]


def scratch_databases(server: MariaDB) -> set[str]:
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'onwatch\\_drill\\_%'")
        return {r[0] for r in cur.fetchall()}


def live_checksums(db: MariaSource) -> dict[str, str]:
    rows = db.execute(f"CHECKSUM TABLE {db.name}.customers, {db.name}.orders")
    return {str(r[0]).split(".", 1)[1]: str(r[1]) for r in rows}


# --- backups and drills ---------------------------------------------------------------------


@pytest.fixture
def quoted_user(maria_db: MariaSource) -> Iterator[tuple[str, str]]:
    """A user whose password has quotes, a backslash, a hash, a dollar and a space."""
    password = "p w\"'#\\$x-" + secrets.token_hex(4)
    with maria_db.server.connect() as c, c.cursor() as cur:
        cur.execute("CREATE USER 'quoted'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'quoted'@'127.0.0.1'")
    yield "quoted", password
    with maria_db.server.connect() as c, c.cursor() as cur:
        cur.execute("DROP USER 'quoted'@'127.0.0.1'")


def test_a_mariadb_plan_backs_up_and_its_drill_proves_it(
    org: Organization,
    maria_db: MariaSource,
    quoted_user: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the tools' argv recorded: the password reaches them, never through argv."""
    argv_log = tmp_path / "argv.log"
    record = f'for a in "$@"; do echo "$a" >> {argv_log}; done\nexec "$real" "$@"'
    monkeypatch.setenv("ONWATCH_MARIADB_BIN_DIR", str(wrapped_tools(tmp_path, record, record)))
    user, password = quoted_user
    source = maria_source(
        org,
        maria_db,
        username=user,
        password=password,
        smoke_queries=[
            {"sql": "SELECT name FROM customers ORDER BY id", "expect": [["ada"], ["bob"], ["çy"]]},
            # Smoke queries only read: the routine's coming back is asked of the catalogue.
            {
                "sql": "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
                "WHERE ROUTINE_SCHEMA = DATABASE()",
                "expect": [["order_count"]],
            },
        ],
    )
    plan = plan_for(source, [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert run.state == Outcome.SUCCEEDED and run.bytes_processed > 0
    assert run.contents["tables"] == {"customers": 3, "orders": 250}
    assert run.contents["checksums"] == live_checksums(maria_db)
    [copy] = run.copies.all()
    assert copy.good
    [snap] = restic.snapshots(services.repo_of(copy.repository), [plan.tag])
    assert snap.paths[0].endswith(f"onwatch-source-{source.pk}.sql")

    before = scratch_databases(maria_db.server)
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert d.verified and d.rto_met
    names = {c["check"] for c in d.checks}
    assert names >= {"rows in customers", "rows in orders", "checksum of customers"}
    assert all(c["ok"] for c in d.checks) and len(d.checks) == 6
    assert scratch_databases(maria_db.server) == before, "the scratch database was left behind"

    args = argv_log.read_text().splitlines()
    option_files = [a.split("=", 1)[1] for a in args if a.startswith("--defaults-file=")]
    assert len(option_files) == 2, args  # one dump, one restore
    assert not any(password in a or "p w" in a for a in args)
    assert not any(Path(f).exists() for f in option_files), "an option file was left behind"


def test_counts_and_checksums_match_the_dump_while_writers_commit(
    org: Organization, maria_db: MariaSource, tmp_path: Path
) -> None:
    """Rows committed all through the backup: the recorded numbers must still be the
    dump's, or the drill would find the restored copy different."""
    stop, written = threading.Event(), [0]

    def writer() -> None:
        with maria_db.server.connect(maria_db.name) as c, c.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO orders (customer, total) VALUES (1, 5)")
                cur.execute("UPDATE customers SET seen = now(3) WHERE id = 2")
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        plan = plan_for(maria_source(org, maria_db), [local_repo(org, tmp_path / "repo")])
        job, run = backup(plan)
    finally:
        stop.set()
        thread.join()
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert 250 < run.contents["tables"]["orders"] < 250 + written[0]
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert d.verified


def test_a_restored_database_missing_a_table_or_rows_fails_the_drill(
    org: Organization, maria_db: MariaSource, tmp_path: Path
) -> None:
    plan = plan_for(maria_source(org, maria_db), [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error
    # A real restore never goes into a database that exists, such as the source itself.
    chosen = restores.choose(plan)
    with pytest.raises(restores.RestoreRefused) as refused:
        restores.restore(plan, chosen, maria_db.server.url(maria_db.name))
    assert (
        str(refused.value)
        == f"the database {maria_db.name} exists already; restore into a new name"
    )
    assert maria_db.execute("SELECT count(*) FROM orders") == [[250]]

    # The run recorded a table the snapshot does not hold, and other orders.
    run.contents["tables"]["invoices"] = 12
    run.contents["checksums"]["orders"] = "12345"
    run.save()
    job, d = drill(plan)
    assert_failed_with_alert(job, "rows in invoices: missing from the restored copy")
    assert not d.verified
    bad = [c["check"] for c in d.checks if not c["ok"]]
    assert bad == ["rows in invoices", "checksum of orders"]
    assert scratch_databases(maria_db.server) == set()

    # A snapshot its newest drill could not bring back whole is offered to no restore.
    with pytest.raises(restores.RestoreRefused, match="could not bring it back whole"):
        restores.choose(plan)


def test_a_dump_killed_mid_stream_leaves_no_snapshot_that_looks_good(
    org: Organization,
    maria_db: MariaSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    maria_db.execute(  # enough data that 4 KiB is a fraction of the dump
        "INSERT INTO orders (customer, total, note) SELECT 1, seq, repeat('x', 200) "
        "FROM seq_1_to_2000"
    )
    repository = local_repo(org, tmp_path / "repo")
    plan = plan_for(maria_source(org, maria_db), [repository])
    cut_off = '"$real" "$@" | head -c 4096\nkill -9 $$'
    monkeypatch.setenv("ONWATCH_MARIADB_BIN_DIR", str(wrapped_tools(tmp_path, cut_off)))
    job, run = backup(plan)
    assert_failed_with_alert(job, "mariadb-dump was killed by signal 9")
    [copy] = run.copies.all()
    assert not copy.good and copy.removed and copy.snapshot_id
    assert restic.snapshots(services.repo_of(repository)) == []
    job, _ = drill(plan)
    assert_failed_with_alert(job, "holds no good backup")


def test_a_wrong_source_password_fails_the_run_in_plain_words(
    org: Organization, maria_db: MariaSource, tmp_path: Path
) -> None:
    source = maria_source(org, maria_db, password="not-the-password")
    job, _ = backup(plan_for(source, [local_repo(org, tmp_path / "repo")]))
    assert_failed_with_alert(job, "refused user onwatch with this password")
    assert not RunCopy.objects.filter(good=True).exists()


def test_a_user_without_reload_is_told_before_the_first_run_and_by_the_run(
    org: Organization, maria_db: MariaSource, tmp_path: Path
) -> None:
    with maria_db.server.connect() as c, c.cursor() as cur:
        cur.execute("CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'reader-pw'")
        cur.execute(
            f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON {maria_db.name}.* TO 'reader'@'127.0.0.1'"
        )
    try:
        source = maria_source(org, maria_db, username="reader", password="reader-pw")
        [problem] = checks.check_source(source)
        assert "lacks the RELOAD privilege" in problem and "GRANT RELOAD ON *.*" in problem
        job, _ = backup(plan_for(source, [local_repo(org, tmp_path / "repo")]))
        assert_failed_with_alert(job, "needs the RELOAD privilege")
    finally:
        with maria_db.server.connect() as c, c.cursor() as cur:
            cur.execute("DROP USER 'reader'@'127.0.0.1'")


# --- onwatch restore ----------------------------------------------------------------------------


def test_onwatch_restore_makes_a_new_mariadb_database(
    migrated_env: dict[str, str], tmp_path: Path, maria_db: MariaSource
) -> None:
    s = maria_db.server
    make_plan(
        migrated_env,
        "mariadb",
        tmp_path / "repo",
        host=s.host,
        port=s.port,
        database=maria_db.name,
        username=s.user,
        password=s.password,
    )
    name = f"bk_restored_{secrets.token_hex(4)}"
    url = s.url(name)
    try:
        done = run(["restore", "nightly", "--to", url, "--yes"], migrated_env)
        assert done.returncode == 0, done.stderr
        assert s.password not in done.stdout + done.stderr
        restored = MariaSource(s, name)
        assert restored.execute("SELECT count(*) FROM orders") == [[250]]
        assert live_checksums(restored) == live_checksums(maria_db)
        assert restored.execute("CALL order_count()") == [[250]]
    finally:
        with s.connect() as c, c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")


# --- checks before the first run ---------------------------------------------------------------


def test_check_source_passes_a_good_source_and_explains_bad_ones(
    org: Organization, maria_db: MariaSource
) -> None:
    assert checks.check_source(maria_draft(org, maria_db)) == []
    wrong = checks.check_source(maria_draft(org, maria_db, password="nope"))
    assert wrong == [
        f"the server at 127.0.0.1:{maria_db.server.port} refused user onwatch with this "
        "password; check the user name and password"
    ]
    [missing] = checks.check_source(maria_draft(org, maria_db, database="no_such_db"))
    assert (
        missing
        == f"there is no database no_such_db on 127.0.0.1:{maria_db.server.port}; check its name"
    )
    [unreachable] = checks.check_source(maria_draft(org, maria_db, port=free_port()))
    assert unreachable.startswith("cannot reach the database server at 127.0.0.1:")
    [scratch] = checks.check_source(
        maria_draft(
            org, maria_db, scratch_url=f"mariadb://onwatch:bad@127.0.0.1:{maria_db.server.port}/"
        )
    )
    assert scratch.startswith("scratch server for drills: the server at 127.0.0.1:")


def test_check_source_explains_an_old_or_foreign_dump_tool(
    org: Organization, maria_db: MariaSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert version_problem(Version("MariaDB", 10, 11), Version("MariaDB", 10, 11)) is None
    assert version_problem(Version("MariaDB", 11, 4), Version("MariaDB", 10, 11)) is None
    older = version_problem(Version("MariaDB", 10, 5), Version("MariaDB", 10, 11))
    assert older == (
        "the dump tool is from MariaDB 10.5 but the server runs MariaDB 10.11; install the "
        "MariaDB 10.11 client tools (or newer) or point ONWATCH_MARIADB_BIN_DIR at them"
    )
    mysql8 = version_problem(Version("MariaDB", 10, 11), Version("MySQL", 8, 0))
    assert mysql8 is not None and "does not dump MySQL 8 faithfully" in mysql8
    mysqldump = version_problem(Version("MySQL", 8, 0), Version("MariaDB", 10, 11))
    assert mysqldump is not None and "fails on MariaDB servers" in mysqldump
    assert version_problem(None, Version("MariaDB", 10, 11)) is not None

    # The versions as the real tool and server print them.
    server = parse_version(maria_db.server.version)
    assert server is not None and server.flavour == "MariaDB"
    assert tool_version("dump") == server
    assert parse_version("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL …)") == Version(
        "MySQL", 8, 0
    )
    assert parse_version("8.0.36-0ubuntu0.22.04.1") == Version("MySQL", 8, 0)

    # An older mariadb-dump in front of the real server is caught before any run.
    old = 'case "$1" in --version) echo "mariadb-dump  Ver 10.19 Distrib 10.5.23-MariaDB";; esac'
    monkeypatch.setenv("ONWATCH_MARIADB_BIN_DIR", str(wrapped_tools(tmp_path, old)))
    [problem] = checks.check_source(maria_draft(org, maria_db))
    assert problem.startswith(f"the dump tool is from MariaDB 10.5 but the server runs {server};")
    monkeypatch.setenv("ONWATCH_MARIADB_BIN_DIR", str(tmp_path))
    [problem] = checks.check_source(maria_draft(org, maria_db))
    assert problem.startswith("mariadb-dump is not installed on this machine")


def test_a_copy_on_the_mariadb_servers_machine_is_not_offsite(org: Organization) -> None:
    source = services.add_source(
        org, "db", SourceKind.MARIADB, host="db.example", database="shop", provider="hetzner"
    )
    same_host = services.add_repository(
        org, "sftp", "sftp:me@db.example:/r", provider="ovh", initialise=False
    )
    elsewhere = services.add_repository(
        org, "b2", "b2:bucket:path", provider="backblaze", initialise=False
    )
    assert services.not_offsite(plan_for(source, [same_host]))
    assert not services.not_offsite(services.add_plan(source, "other", [same_host, elsewhere]))


def test_a_drill_copy_gets_the_sources_events_switched_off(
    org: Organization, maria_db: MariaSource, tmp_path: Path
) -> None:
    """The scratch copy sits on the source's own server: its events must not run the
    source's jobs there. A restore people ask for keeps them as they were."""
    with maria_db.server.connect(maria_db.name) as c, c.cursor() as cur:
        cur.execute("CREATE TABLE ticks (at datetime)")
        cur.execute(
            "CREATE EVENT `tick ENABLE DO` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' "
            "COMMENT 'it''s ENABLE DO' DO INSERT INTO ticks VALUES (now())"
        )
        cur.execute(
            "CREATE EVENT tidy ON SCHEDULE AT '2030-01-01' ON COMPLETION PRESERVE "
            "DO DELETE FROM ticks"
        )
    plan = plan_for(maria_source(org, maria_db), [local_repo(org, tmp_path / "repo")])
    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    repo = services.repo_of(run.copies.get().repository)
    [snap] = restic.snapshots(repo, [plan.tag])

    server = mariadb.scratch_server(plan.source)
    for events_off, status in ((True, "DISABLED"), (False, "ENABLED")):
        name = mariadb.create_scratch(server)
        try:
            targets.to_mariadb(repo, snap, server, name, events_off=events_off)
            with maria_db.server.connect() as c, c.cursor() as cur:
                cur.execute(
                    "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS "
                    "WHERE EVENT_SCHEMA = %s ORDER BY EVENT_NAME",
                    (name,),
                )
                assert cur.fetchall() == (("tick ENABLE DO", status), ("tidy", status))
        finally:
            drop_database(server, name)

    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED and d.verified, job.error + job.log
    # The rewrite caught both; the fallback that switches events off afterwards had nothing
    # left to do.
    assert "switched off event" not in job.log
