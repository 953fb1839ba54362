"""A deleted service's uid is never a later service's (deploys/svcusers.py), with real
useradd and userdel: the new service must not own what the old one left behind."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onwatch.deploys import svcusers

pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root gives services users of their own"),
]
# Ids of services no test database reaches (the session's prefix keeps names apart).
OLD, NEW, NEWER = 990001, 990002, 990003


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.DATA_DIR = str(tmp_path)
    yield tmp_path
    for service_id in (OLD, NEW, NEWER):
        svcusers.remove(service_id)


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
