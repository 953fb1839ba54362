"""Encryption at rest, proved on real onwatch processes: what lands on disk, `onwatch keys
rotate`, and a missing or wrong key file stopping every command before it changes a thing."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from onwatch.core.keyring import Keyring
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.child import uptime as child_uptime
from tests.support.procs import isolated, run
from tests.support.receivers import WebhookReceiver, add_channels

TOKEN = "xoxb-7f3c9a1e5d-super-secret"
PASSWORD = "mail-p4ssw0rd-do-not-leak"
# Tables whose rows must stay byte-identical when a command refuses to start.
WATCHED = ["alerts_channel", "core_keycheck", "core_auditentry", "core_job", "django_migrations"]


def data_dir(env: dict[str, str]) -> Path:
    return Path(env["ONWATCH_DATA_DIR"])


def key_file(env: dict[str, str]) -> Path:
    return data_dir(env) / "keyring.json"


def query(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    """Raw rows, read past Django and its decrypting field."""
    if env.get("DATABASE_URL"):
        with psycopg.connect(env["DATABASE_URL"]) as pg:
            return list(pg.execute(sql).fetchall())
    db = sqlite3.connect(data_dir(env) / "onwatch.sqlite3")
    try:
        return list(db.execute(sql).fetchall())
    finally:
        db.close()


def raw_secrets(env: dict[str, str]) -> list[str]:
    rows = query(env, "SELECT url FROM alerts_channel ORDER BY id")
    rows += query(env, "SELECT value FROM core_keycheck")
    return [r[0] for r in rows]


def snapshot(env: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    # The table names are the constants above, not input.
    rows = {t: query(env, f"SELECT * FROM {t}") for t in WATCHED}  # noqa: S608
    return {t: sorted(map(tuple, r), key=repr) for t, r in rows.items()}


def secret_urls(hook_url: str) -> dict[str, str]:
    port = hook_url.rsplit(":", 1)[1].split("/")[0]
    return {
        "hook": f"json://robot:{TOKEN}@127.0.0.1:{port}/in/{TOKEN}",
        "mail": f"mailto://ops:{PASSWORD}@127.0.0.1:2525?from=onwatch@example.com&to=ops@x.com",
    }


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def installed(tmp_path: Path, hooks: WebhookReceiver) -> Iterator[dict[str, str]]:
    """A migrated onwatch holding two channels whose URLs carry a token and a password."""
    with isolated(tmp_path, migrated=True) as env:
        # Migrated by the same start-up code as `onwatch migrate`, in the same process.
        add_channels(env, secret_urls(hooks.url()), migrate=True)
        yield env


def test_channel_urls_reach_the_disk_only_encrypted(tmp_path: Path, hooks: WebhookReceiver) -> None:
    with isolated(tmp_path, migrated=True) as env:
        assert run(["migrate"], env).returncode == 0
        sqlite = None if env.get("DATABASE_URL") else data_dir(env) / "onwatch.sqlite3"
        if sqlite is not None:
            # An open connection keeps the write-ahead log on disk after the writer exits,
            # so the -wal file is checked too, not only the main file.
            holder = sqlite3.connect(sqlite)
            holder.execute("SELECT count(*) FROM alerts_channel").fetchall()
        add_channels(env, secret_urls(hooks.url()))
        secrets = raw_secrets(env)
        if sqlite is not None:
            wal = sqlite.with_name(sqlite.name + "-wal")
            assert wal.stat().st_size > 0
            on_disk = sqlite.read_bytes() + wal.read_bytes()
            holder.close()
            # The scan can see text: the plain columns are there, the secrets are not.
            assert b"mail" in on_disk and b"127.0.0.1:2525" in on_disk
            assert TOKEN.encode() not in on_disk and PASSWORD.encode() not in on_disk
            assert b"robot:" not in on_disk
    assert len(secrets) == 3
    for value in secrets:
        assert value.startswith("ow1:1:")
        assert TOKEN not in value and PASSWORD not in value


def test_rotate_re_encrypts_everything_under_key_2_and_it_all_still_reads(
    installed: dict[str, str], hooks: WebhookReceiver
) -> None:
    before = raw_secrets(installed)
    done = run(["keys", "rotate"], installed)
    assert done.returncode == 0, done.stderr
    assert "key 2 is now current; 3 secrets re-encrypted" in done.stdout

    after = raw_secrets(installed)
    assert len(after) == 3 and all(v.startswith("ow1:2:") for v in after)
    assert not set(before) & set(after)
    assert key_file(installed).stat().st_mode & 0o777 == 0o600
    assert sorted(json.loads(key_file(installed).read_text())["keys"]) == ["1", "2"]

    # Still readable: the webhook gets the token back out of the database, as the
    # password of its Basic auth and as part of its path.
    sent = run(["notify", "test", "--channel", "hook"], installed)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    [hook] = hooks.hooks
    assert hook.path == f"/in/{TOKEN}"
    auth = base64.b64decode(hook.headers["Authorization"].removeprefix("Basic ")).decode()
    assert auth == f"robot:{TOKEN}"
    audit = query(installed, "SELECT action FROM core_auditentry WHERE action LIKE 'keys%'")
    assert audit == [("keys-rotated",)]


# Each refusal changes nothing, so one installation serves all three commands.
REFUSING = [["keys", "rotate"], ["migrate"], ["up"]]


def assert_refused(env: dict[str, str], why: str) -> None:
    before = snapshot(env)
    for args in REFUSING:
        done = run(args, env, timeout=30)
        assert done.returncode == 2, f"{args}: {done.stdout}{done.stderr}"
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("onwatch: The key file ") and why in line, line
        assert "restore" in line
        assert snapshot(env) == before, f"{args} changed the database"


def test_a_missing_key_file_stops_every_command_and_changes_nothing(
    installed: dict[str, str],
) -> None:
    key_file(installed).rename(key_file(installed).with_name("keyring.safe"))
    assert_refused(installed, "is missing")
    assert not key_file(installed).exists()
    assert all(v.startswith("ow1:1:") for v in raw_secrets(installed))


def test_another_installs_key_file_stops_every_command_and_changes_nothing(
    installed: dict[str, str], tmp_path: Path
) -> None:
    Keyring.create(tmp_path / "other.json")
    shutil.copyfile(tmp_path / "other.json", key_file(installed))
    wrong = key_file(installed).read_bytes()
    assert_refused(installed, "does not match this database")
    assert key_file(installed).read_bytes() == wrong


def test_a_pending_migration_waits_until_the_key_file_fits(
    installed: dict[str, str], tmp_path: Path
) -> None:
    # As after an upgrade: the newest alerts migration has not run yet.
    call(child_core.migrate_back, installed, "alerts", "0001")
    real = key_file(installed).read_bytes()
    before = snapshot(installed)

    key_file(installed).unlink()
    missing = run(["migrate"], installed)
    assert (missing.returncode, snapshot(installed)) == (2, before), missing.stderr
    assert "is missing" in missing.stderr

    shutil.copyfile(Keyring.create(tmp_path / "other.json").path, key_file(installed))
    wrong = run(["migrate"], installed)
    assert (wrong.returncode, snapshot(installed)) == (2, before), wrong.stderr
    assert "does not match this database" in wrong.stderr

    key_file(installed).write_bytes(real)
    done = run(["migrate"], installed)
    assert done.returncode == 0, done.stderr
    assert snapshot(installed)["django_migrations"] != before["django_migrations"]


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def as_a_normal_user() -> None:
    """Run as a child: root stops overriding file permissions (its capabilities to do so
    leave the bounding set, so the program it becomes lacks them), as a normal user would."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def assert_one_line_refusal(env: dict[str, str], why: str) -> None:
    before = snapshot(env)
    for args in REFUSING:
        done = run(args, env, timeout=30, preexec_fn=as_a_normal_user)
        assert done.returncode == 2, f"{args}: {done.stdout}{done.stderr}"
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("onwatch: The key file ") and why in line, line
        assert snapshot(env) == before, f"{args} changed the database"


def test_a_key_file_in_a_folder_onwatch_may_not_open_stops_every_command_in_one_line(
    installed: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    key_file(installed).rename(folder / "keyring.json")
    installed["ONWATCH_KEY_FILE"] = str(folder / "keyring.json")
    folder.chmod(0)
    try:
        assert_one_line_refusal(installed, "cannot be read (Permission denied); let the user")
    finally:
        folder.chmod(0o700)
    # Refused as unreadable, not taken for missing: no second key file was made beside it.
    assert sorted(p.name for p in folder.iterdir()) == ["keyring.json"]


def test_a_key_file_that_is_not_text_stops_every_command_in_one_line(
    installed: dict[str, str],
) -> None:
    key_file(installed).write_bytes(b"\xff\xfe\x00garbage\x80")
    assert_one_line_refusal(installed, "is damaged")


def test_a_key_file_folder_onwatch_may_not_write_stops_a_first_start_before_anything_is_made(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o500)
    with isolated(tmp_path, ONWATCH_KEY_FILE=str(folder / "keyring.json")) as env:
        try:
            done = run(["up"], env, timeout=30, preexec_fn=as_a_normal_user)
        finally:
            folder.chmod(0o700)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "key file's folder" in line and "ONWATCH_KEY_FILE" in line, line
    assert not data_dir(env).exists()


MONITOR_TOKEN = "mon-Bearer-7d1e-secret"
MONITOR_CONFIG = {
    "url": f"https://bot:{PASSWORD}@api.example.com/",
    "headers": {"X-Token": MONITOR_TOKEN},
}


def raw_config(env: dict[str, str]) -> str:
    [(value,)] = query(env, "SELECT config FROM uptime_monitor")
    return str(value)


def test_monitor_settings_are_encrypted_and_rotated_with_every_other_secret(
    installed: dict[str, str],
) -> None:
    call(child_uptime.add_monitor, installed, "Acme", "api", "http", MONITOR_CONFIG)
    before = raw_config(installed)
    assert before.startswith("ow1:1:") and MONITOR_TOKEN not in before
    done = run(["keys", "rotate"], installed)
    assert done.returncode == 0, done.stderr
    assert "key 2 is now current; 4 secrets re-encrypted" in done.stdout
    after = raw_config(installed)
    assert after.startswith("ow1:2:") and PASSWORD not in after
    config = json.loads(call(child_uptime.print_monitor_config, installed, "api"))
    assert config["headers"] == {"X-Token": MONITOR_TOKEN}
    assert config["url"] == f"https://bot:{PASSWORD}@api.example.com/"


def test_the_upgrade_encrypts_the_settings_of_existing_monitors(
    installed: dict[str, str],
) -> None:
    call(child_uptime.add_monitor, installed, "Acme", "api", "http", MONITOR_CONFIG)
    # As before the upgrade: the settings lay in the database as plain JSON.
    call(child_core.migrate_back, installed, "uptime", "0003")
    assert MONITOR_TOKEN in raw_config(installed)
    done = run(["migrate"], installed)
    assert done.returncode == 0, done.stderr
    assert raw_config(installed).startswith("ow1:1:")
    assert MONITOR_TOKEN not in raw_config(installed)
    if not installed.get("DATABASE_URL"):
        # Nor left behind in the file's free pages, where the plain rows used to be.
        sqlite = data_dir(installed) / "onwatch.sqlite3"
        files = [sqlite, sqlite.with_name(sqlite.name + "-wal")]
        on_disk = b"".join(f.read_bytes() for f in files if f.exists())
        assert b"Acme" in on_disk and MONITOR_TOKEN.encode() not in on_disk
    config = json.loads(call(child_uptime.print_monitor_config, installed, "api"))
    assert config["headers"] == {"X-Token": MONITOR_TOKEN}
