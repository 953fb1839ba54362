"""A deleted service's uid is never a later service's (deploys/svcusers.py), with real
useradd and userdel: the new service must not own what the old one left behind."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onwatch.deploys import svcusers
from tests.support.svcusers import ended_sessions, remove_users

pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root gives services users of their own"),
]
# Ids of services no test database reaches (the session's prefix keeps names apart).
OLD, NEW, NEWER = 990001, 990002, 990003
# A system account a package makes after the service was deleted.
PACKAGE = f"{svcusers.name_of(0)}pkg"


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.DATA_DIR = str(tmp_path)
    yield tmp_path
    # remove() keeps tombstones: the tests' own users go for good.
    for name in [*(svcusers.name_of(i) for i in (OLD, NEW, NEWER)), PACKAGE]:
        remove_users(name)
    remove_users(f"{settings.SERVICE_USER_PREFIX}gone-")  # every tombstone_of()


def shadow(name: str) -> tuple[str, str]:
    """The password and the expiry date (days since 1970) of `name` in /etc/shadow."""
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1], fields[7]
    raise KeyError(name)


def assert_tombstone(uid: int, service_id: int) -> None:
    """The deleted service's user is kept, locked, under a name no service gets."""
    with pytest.raises(KeyError):
        pwd.getpwnam(svcusers.name_of(service_id))
    kept = pwd.getpwuid(uid)
    assert kept.pw_name == svcusers.tombstone_of(uid)
    assert kept.pw_shell == "/usr/sbin/nologin"
    assert kept.pw_gecos == f"deleted onwatch service {service_id}"
    password, expires = shadow(kept.pw_name)
    assert password.startswith("!") and expires == "1"
    assert grp.getgrgid(uid).gr_name == kept.pw_name  # its group stays too
    assert [g.gr_name for g in grp.getgrall() if kept.pw_name in g.gr_mem] == []


@pytest.fixture
def left_in_tmp() -> Iterator[Callable[[int], Path]]:
    """A file in /tmp that a service's process left: only its owner reads it."""
    made: list[Path] = []

    def leave(uid: int) -> Path:
        fd, name = tempfile.mkstemp(prefix="ow-left-", dir="/tmp")
        os.write(fd, b"the old service's\n")
        os.fchown(fd, uid, uid)
        os.fchmod(fd, 0o600)
        os.close(fd)
        made.append(Path(name))
        return made[-1]

    yield leave
    for path in made:
        path.unlink(missing_ok=True)


def test_a_later_service_never_gets_a_deleted_services_uid(
    data_dir: Path, left_in_tmp: Callable[[int], Path]
) -> None:
    made = pwd.getpwnam(svcusers.ensure(OLD))
    old = made.pw_uid
    assert made.pw_gid == old  # its group's id is its own too: never given again either
    left = left_in_tmp(old)
    svcusers.remove(OLD)
    assert_tombstone(old, OLD)
    new_name = svcusers.ensure(NEW)
    new = pwd.getpwnam(new_name)
    assert new.pw_uid != old and new.pw_gid != old
    # Its processes cannot read what the deleted service left.
    as_new = ["setpriv", f"--reuid={new.pw_uid}", f"--regid={new.pw_gid}", "--clear-groups"]
    read = subprocess.run([*as_new, "cat", str(left)], capture_output=True, text=True)
    assert read.returncode != 0 and "Permission denied" in read.stderr
    # Remembered in the data directory, so it holds across restarts of onwatch.
    used = [int(u) for u in (data_dir / svcusers.USED_FILE).read_text().split()]
    assert used == [old, new.pw_uid]
    svcusers.remove(NEW)
    assert pwd.getpwnam(svcusers.ensure(NEWER)).pw_uid not in (old, new.pw_uid)


def test_a_user_made_by_an_older_onwatch_is_remembered_when_used_or_removed(
    data_dir: Path,
) -> None:
    name = svcusers.name_of(OLD)
    argv = ["useradd", "--system", "--user-group", "--no-create-home", name]
    subprocess.run(argv, check=True, env=svcusers.LAUNCH_ENV)
    uid = pwd.getpwnam(name).pw_uid
    svcusers.remove(OLD)
    assert (data_dir / svcusers.USED_FILE).read_text().split() == [str(uid)]
    assert pwd.getpwnam(svcusers.ensure(NEW)).pw_uid != uid


def test_a_data_directory_where_the_ids_cannot_be_kept_is_said_in_one_line(
    settings: Any, tmp_path: Path
) -> None:
    settings.DATA_DIR = str(tmp_path / "gone")
    with pytest.raises(svcusers.UserError) as refused:
        svcusers.ensure(OLD)
    assert str(refused.value) == (
        f"onwatch could not open {tmp_path}/gone/service-uids, where it keeps the ids given "
        "to services' users (No such file or directory); make the data directory writable "
        "for it"
    )
    with pytest.raises(KeyError):
        pwd.getpwnam(svcusers.name_of(OLD))  # nothing was made


def test_a_uid_taken_between_choosing_and_useradd_makes_onwatch_take_the_next(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is one data directory's: another onwatch on this machine (or a package's
    useradd) may take the uid meanwhile. Seen in the suite, where each worker has its own
    data directory: the later useradd failed and so did its pipeline."""
    taken = pwd.getpwnam("daemon").pw_uid  # a uid some system user surely has
    chosen = svcusers._unused_uid
    calls: list[set[int]] = []

    def first_a_taken_one(used: set[int]) -> int:
        calls.append(set(used))
        return taken if len(calls) == 1 else chosen(used)

    monkeypatch.setattr(svcusers, "_unused_uid", first_a_taken_one)
    made = pwd.getpwnam(svcusers.ensure(NEW))
    assert made.pw_uid != taken and len(calls) == 2 and taken in calls[1]


def test_a_deleted_services_uid_stays_taken_without_onwatchs_list(data_dir: Path) -> None:
    name = svcusers.ensure(OLD)
    old = pwd.getpwnam(name).pw_uid
    # In a group of others' (a person added it): the tombstone leaves it.
    joined = ["usermod", "--append", "--groups", "users", name]
    subprocess.run(joined, check=True, env=svcusers.LAUNCH_ENV)
    svcusers.remove(OLD)
    assert_tombstone(old, OLD)
    # The data directory wiped or restored from before: only /etc/passwd remembers.
    (data_dir / svcusers.USED_FILE).unlink()
    package = ["useradd", "--system", "--user-group", "--no-create-home", PACKAGE]
    subprocess.run(package, check=True, env=svcusers.LAUNCH_ENV)
    assert pwd.getpwnam(PACKAGE).pw_uid != old
    # Even when it is the only system uid the package may take.
    only_old = [f"SYS_{k}_{e}={old}" for k in ("UID", "GID") for e in ("MIN", "MAX")]
    narrow = [*package[:-1], *(f"--key={k}" for k in only_old), f"{PACKAGE}2"]
    refused = subprocess.run(narrow, capture_output=True, text=True, env=svcusers.LAUNCH_ENV)
    assert refused.returncode != 0, f"useradd gave {old} to a new account"
    with pytest.raises(KeyError):
        pwd.getpwnam(f"{PACKAGE}2")
    # A later service of the same id (a new database) gets a user of its own, not the old.
    again = pwd.getpwnam(svcusers.ensure(OLD))
    assert again.pw_uid not in (old, pwd.getpwnam(PACKAGE).pw_uid)
    assert again.pw_shell == "/usr/sbin/nologin" and shadow(again.pw_name)[1] == ""


def test_a_user_still_running_when_deleted_is_renamed_before_its_id_serves_again(
    data_dir: Path,
) -> None:
    name = svcusers.ensure(OLD)
    old = pwd.getpwnam(name).pw_uid
    as_old = ["setpriv", f"--reuid={old}", f"--regid={old}", "--clear-groups", "sleep", "60"]
    running = subprocess.Popen(as_old)
    try:
        time.sleep(0.5)  # usermod --login refuses a user with a running process
        svcusers.remove(OLD)
        assert pwd.getpwnam(name).pw_gecos == f"deleted onwatch service {OLD}"
        with pytest.raises(svcusers.UserError) as refused:
            svcusers.ensure(OLD)
        assert str(refused.value).startswith(
            f"the user {name} belonged to a deleted service and could not be renamed ("
        )
        assert str(refused.value).endswith(f"stop its processes (pkill -u {name}) and run again")
    finally:
        running.kill()
        running.wait()
    # Its process ended: the next ensure renames the tombstone and makes a user anew.
    again = pwd.getpwnam(svcusers.ensure(OLD))
    assert again.pw_uid != old
    assert pwd.getpwuid(old).pw_name == svcusers.tombstone_of(old)


def test_a_full_system_uid_range_is_said_in_one_line(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = pwd.getpwnam(svcusers.ensure(OLD)).pw_uid
    svcusers.remove(OLD)
    # The deleted service's uid is the only system uid here.
    login_defs = data_dir / "login.defs"
    login_defs.write_text(f"SYS_UID_MIN\t{old}\nSYS_UID_MAX {old}\n")
    monkeypatch.setattr(svcusers, "LOGIN_DEFS", login_defs)
    with pytest.raises(svcusers.UserError) as refused:
        svcusers.ensure(NEW)
    assert str(refused.value) == (
        f"onwatch cannot make a user for the service: every system user id ({old} to "
        f"{old}) is taken, 1 of them kept for deleted services so that no new account owns "
        "what they left; widen SYS_UID_MIN/SYS_UID_MAX in /etc/login.defs"
    )
    with pytest.raises(KeyError):
        pwd.getpwnam(svcusers.name_of(NEW))


def test_the_tests_remove_users_left_by_a_session_that_ended(data_dir: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    left, ours = f"owt{ended.pid}-gone-5", svcusers.name_of(NEWER)
    for name in (left, ours):
        argv = ["useradd", "--system", "--user-group", "--no-create-home", name]
        subprocess.run(argv, check=True, env=svcusers.LAUNCH_ENV)
    assert f"owt{ended.pid}-" in ended_sessions()
    assert f"owt{os.getpid()}-" not in ended_sessions()  # this session is running
    assert remove_users(f"owt{ended.pid}-") == [left]
    with pytest.raises(KeyError):
        pwd.getpwnam(left)
    assert pwd.getpwnam(ours)
