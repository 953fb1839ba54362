"""Workspaces removed after a run, whatever the step left in them."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from onwatch.config import ConfigError
from onwatch.deploys import workdir
from onwatch.deploys.workdir import remove_workspace
from onwatch.startup import check_work_dir
from tests.support.receivers import wait_until

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


@pytest.fixture
def unprivileged() -> Iterator[tuple[Path, int]]:
    """A folder owned by an ordinary user, and that user: read-only folders stop only a
    user who is not root, so as root the removal runs as that user (like onwatch)."""
    user = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()
    root = Path(tempfile.mkdtemp(prefix="onwatch-workdir-"))
    os.chown(root, user, -1)
    root.chmod(0o755)
    yield root, user
    shutil.rmtree(root)


def as_user(user: int, path: Path) -> int:
    """remove_workspace(path) in a child process running as `user`; its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() != user:
                os.setgroups([])
                os.setresuid(user, user, user)
            remove_workspace(path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_read_only_folders_are_removed_without_changing_what_a_link_leads_to(
    unprivileged: tuple[Path, int],
) -> None:
    root, user = unprivileged
    precious = root / "key"  # stands for a file of onwatch's
    precious.write_text("secret")
    precious.chmod(0o600)
    workspace = root / "workspace"
    (workspace / "ro" / "sub").mkdir(parents=True)
    (workspace / "ro" / "sub" / "file").write_text("x")
    (workspace / "ro" / "link").symlink_to(precious)
    (workspace / "ro" / "dirlink").symlink_to(root)
    for path in [precious, *workspace.rglob("*"), workspace]:
        os.chown(path, user, -1, follow_symlinks=False)
    (workspace / "ro" / "sub").chmod(0o555)
    (workspace / "ro").chmod(0o555)

    code = as_user(user, workspace)

    assert stat.S_IMODE(precious.stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert precious.read_text() == "secret"
    assert (code, workspace.exists()) == (0, False)


def settings_for(work: Path, data: Path) -> SimpleNamespace:
    return SimpleNamespace(WORK_DIR=str(work), DATA_DIR=str(data), KEY_FILE=str(data / "key"))


@pytest.mark.parametrize("how", ["link", "dot-dot"])
def test_a_work_folder_that_is_the_data_directory_by_another_path_is_refused(
    tmp_path: Path, how: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    inside = tmp_path / "link" / "work" if how == "link" else data / ".." / "data" / "work"
    with pytest.raises(ConfigError, match="is inside the data directory"):
        check_work_dir(settings_for(inside, data))
    holding = tmp_path / "link" if how == "link" else data / ".." / "data"
    with pytest.raises(ConfigError, match="holds onwatch's data directory"):
        check_work_dir(settings_for(holding, data))
    check_work_dir(settings_for(tmp_path / "work", data))  # beside it: fine


def test_a_discarded_workspace_leaves_its_place_at_once_and_is_removed_after(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker does not wait for a large checkout to go; the next run finds it gone."""
    settings.WORK_DIR = str(tmp_path / "work")
    workspace = tmp_path / "work" / "workspaces" / "3" / "17"
    (workspace / "ro").mkdir(parents=True)
    (workspace / "ro" / "file").write_text("x")
    (workspace / "ro").chmod(0o555)  # what tools leave (git's objects)
    go_on = threading.Event()
    removing = workdir._remove_quietly

    def slow(path: Path) -> None:
        go_on.wait(30)
        removing(path)

    monkeypatch.setattr(workdir, "_remove_quietly", slow)
    try:
        workdir.discard(workspace)
        assert not workspace.exists()
        trash = tmp_path / "work" / workdir.TRASH
        [moved] = trash.iterdir()  # still there: its removal waits
        assert moved.name.startswith(f"{os.getpid()}-3-17-") and (moved / "ro" / "file").exists()
        assert stat.S_IMODE(trash.stat().st_mode) == 0o700  # no step user passes through
    finally:
        go_on.set()
    wait_until(lambda: not any(trash.iterdir()), 30, "the removal")
    workdir.discard(workspace)  # gone already: nothing to do, no error


@pytest.mark.parametrize("rm", ["rm", "no rm"])
def test_a_discarded_workspace_is_removed_by_rm_or_else_by_onwatch_itself(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, rm: str
) -> None:
    """rm at the lowest priority, away from the worker's processor and lock; where it is
    missing or fails, onwatch removes it itself, read-only folders and links included
    (what a link leads to stays)."""
    settings.WORK_DIR = str(tmp_path / "work")
    if rm == "no rm":
        monkeypatch.setattr(workdir, "REMOVE", ["/nonexistent/rm"])
    kept = tmp_path / "kept"
    kept.write_text("not the workspace's\n")
    workspace = tmp_path / "work" / "workspaces" / "3" / "18"
    (workspace / ".venv" / "lib").mkdir(parents=True)
    for n in range(200):
        (workspace / ".venv" / "lib" / f"m{n}.py").write_text("x")
    (workspace / "link").symlink_to(kept)
    (workspace / ".venv").chmod(0o555)
    workdir.discard(workspace)
    assert workdir.removals_done()
    assert not workspace.exists() and not any((tmp_path / "work" / workdir.TRASH).iterdir())
    assert kept.read_text() == "not the workspace's\n"


@pytest.mark.django_db
def test_a_starting_worker_removes_only_the_trash_of_workers_that_are_gone(
    tmp_path: Path, settings: Any
) -> None:
    """It removed what a worker beside it was still removing too: that one then logged a
    failure telling people to remove it by hand."""
    settings.WORK_DIR = str(tmp_path / "work")
    trash = tmp_path / "work" / workdir.TRASH
    with subprocess.Popen(["sleep", "30"]) as beside, subprocess.Popen(["true"]) as gone:
        gone.wait()
        theirs, left = trash / f"{beside.pid}-3-17-1", trash / f"{gone.pid}-3-18-2"
        for entry in (theirs, left, trash / "3-19-3"):  # the last named before owners were
            (entry / "ro").mkdir(parents=True)
        removed = workdir.remove_leftovers()
        beside.kill()
    assert sorted(removed) == sorted([left, trash / "3-19-3"]) and not left.exists()
    assert (theirs / "ro").exists()
