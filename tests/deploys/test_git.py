"""git.py against real repositories: what a pipeline's checkout leaves in its workspace."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from onwatch.deploys import git
from tests.support.deploys import commit, project
from tests.support.deploys import git as run_git


def test_a_fetch_keeps_the_objects_in_one_pack_not_a_file_each(tmp_path: Path) -> None:
    """Quicker to write (a small repository's checkout took some 100 ms more), and the
    same commit checked out."""
    repo = tmp_path / "repo"
    for n in range(5):
        sha = commit(repo, {**project(), "CHANGES": f"change {n}\n"}, f"Change {n}")
    workspace = tmp_path / "workspace"
    env = git.environment(tmp_path)
    git.fetch(workspace, str(repo), "main", env)
    assert git.checkout(workspace, "main", "", env).sha == sha
    counted = subprocess.run(
        ["git", "-C", str(workspace), "count-objects", "-v"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    said = dict(line.split(": ") for line in counted.stdout.splitlines())
    assert said["count"] == "0", counted.stdout  # loose objects
    assert said["packs"] == "1" and int(said["in-pack"]) >= 15, counted.stdout


def objects_of(repo: Path) -> list[Path]:
    return [p for p in (repo / ".git" / "objects").rglob("*") if p.is_file()]


def test_a_clone_links_the_sources_objects_and_names_no_remote(
    tmp_path: Path,
) -> None:
    """Nothing of the source's path is left in the workspace, and the branch is there as a
    fetch leaves it (refs/remotes/origin/<branch>)."""
    repo, workspace = tmp_path / "repo", tmp_path / "workspace"
    for n in range(3):
        sha = commit(repo, {**project(), "CHANGES": f"change {n}\n"}, f"Change {n}")
    env = git.environment(tmp_path)
    workspace.mkdir()  # made by the pipeline before the sandbox binds it
    assert git.clone_local(workspace, repo, "main", env, linked=True)
    assert git.checkout(workspace, "main", "", env).sha == sha
    assert run_git(workspace, "rev-parse", "refs/remotes/origin/main") == sha
    assert all(p.stat().st_nlink == 2 for p in objects_of(workspace))
    config = (workspace / ".git" / "config").read_text()
    assert str(repo) not in config and "[remote" not in config and "[branch" not in config
    assert "[core]" in config
    assert run_git(workspace, "status", "--porcelain") == ""


def test_a_clone_checks_out_an_older_commit_of_the_branch_when_asked(tmp_path: Path) -> None:
    """A newer push came meanwhile: the pipeline's own commit, not the branch's newest."""
    repo, workspace = tmp_path / "repo", tmp_path / "workspace"
    older = commit(repo, project(), "Older")
    newer = commit(repo, {"CHANGES": "newer\n"}, "Newer")
    env = git.environment(tmp_path)
    assert git.clone_local(workspace, repo, "main", env, linked=True)
    assert git.checked_out(workspace, "main", "", env).sha == newer
    said = git.checked_out(workspace, "main", older, env)
    assert (said.sha, said.message) == (older, "Older")
    assert not (workspace / "CHANGES").exists()
    with pytest.raises(git.GitError, match="is not on branch main"):
        git.checked_out(workspace, "main", "0" * 40, env)


def test_a_mirror_keeps_each_fetch_as_one_pack_for_clones_to_link(tmp_path: Path) -> None:
    repo, mirror, env = tmp_path / "repo", tmp_path / "mirror.git", git.environment(tmp_path)
    for n in range(3):
        commit(repo, {**project(), "CHANGES": f"change {n}\n"}, f"Change {n}")
        git.update_mirror(mirror, str(repo), "main", env)
    counted = run_git(mirror, "count-objects", "-v")
    said = dict(line.split(": ") for line in counted.splitlines())
    assert (said["count"], said["packs"]) == ("0", "3"), counted


def test_a_clone_not_linked_copies_the_objects_into_files_of_its_own(tmp_path: Path) -> None:
    """Where steps run as onwatch's own user, who could make a linked file writable."""
    repo, workspace = tmp_path / "repo", tmp_path / "workspace"
    sha = commit(repo, project(), "First")
    env = git.environment(tmp_path)
    assert git.clone_local(workspace, repo, "main", env, linked=False)
    assert git.checkout(workspace, "main", sha, env).sha == sha
    assert objects_of(workspace) and all(p.stat().st_nlink == 1 for p in objects_of(workspace))


def test_a_clone_of_a_missing_branch_leaves_the_workspace_empty_for_a_fetch_to_say_why(
    tmp_path: Path,
) -> None:
    repo, workspace = tmp_path / "repo", tmp_path / "workspace"
    commit(repo, project(), "First")
    env = git.environment(tmp_path)
    workspace.mkdir()
    assert not git.clone_local(workspace, repo, "gone", env, linked=True)
    assert workspace.is_dir() and not list(workspace.iterdir())
    with pytest.raises(git.GitError, match="the branch gone does not exist"):
        git.fetch(workspace, str(repo), "gone", env)


def test_a_mirror_a_killed_fetch_left_locked_is_made_anew(tmp_path: Path) -> None:
    repo, mirror, env = tmp_path / "repo", tmp_path / "mirror.git", git.environment(tmp_path)
    commit(repo, project(), "First")
    git.update_mirror(mirror, str(repo), "main", env)
    (mirror / "refs" / "heads" / "main.lock").write_text("")  # its fetch was killed
    sha = commit(repo, {"CHANGES": "two\n"}, "Second")
    git.update_mirror(mirror, str(repo), "main", env)
    assert run_git(mirror, "rev-parse", "refs/heads/main") == sha


def test_a_mirror_whose_branch_became_a_folder_of_branches_is_made_anew(tmp_path: Path) -> None:
    """The service's branch went from feature to feature/x, the old one deleted."""
    repo, mirror, env = tmp_path / "repo", tmp_path / "mirror.git", git.environment(tmp_path)
    commit(repo, project(), "First", branch="feature")
    git.update_mirror(mirror, str(repo), "feature", env)
    run_git(repo, "branch", "-m", "feature", "feature/x")
    sha = commit(repo, {"CHANGES": "two\n"}, "Second")
    git.update_mirror(mirror, str(repo), "feature/x", env)
    assert run_git(mirror, "rev-parse", "refs/heads/feature/x") == sha


def test_a_mirror_is_kept_when_the_failure_is_the_remotes(tmp_path: Path) -> None:
    repo, mirror, env = tmp_path / "repo", tmp_path / "mirror.git", git.environment(tmp_path)
    sha = commit(repo, project(), "First")
    git.update_mirror(mirror, str(repo), "main", env)
    with pytest.raises(git.GitError, match="the branch gone does not exist"):
        git.update_mirror(mirror, str(repo), "gone", env)
    assert run_git(mirror, "rev-parse", "refs/heads/main") == sha


def test_gits_answer_comes_when_it_exits_not_when_a_child_it_left_lets_go_of_its_output(
    tmp_path: Path,
) -> None:
    """As with ssh's control master: what git started may outlive it and hold its output."""
    left_behind = "!sleep 30 & echo $!; echo said"
    started = time.monotonic()
    ran = git.git(["-c", f"alias.leave={left_behind}", "leave"], git.environment(tmp_path), 20)
    took = time.monotonic() - started
    sleeper, said = ran.stdout.split()
    os.kill(int(sleeper), signal.SIGKILL)
    assert (ran.returncode, said) == (0, "said")
    assert took < 10


def test_a_git_told_to_stop_is_killed_with_what_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "sleeper"
    hangs = f"!sleep 30 & echo $! > {marker}; wait"
    started = time.monotonic()
    with pytest.raises(git.GitError, match="git hang was stopped before it was done"):
        git.git(["-c", f"alias.hang={hangs}", "hang"], git.environment(tmp_path), 60, marker.exists)
    assert time.monotonic() - started < 10
    assert ended(int(marker.read_text()))


def ended(pid: int, seconds: float = 5) -> bool:
    """Gone, or dead and not yet reaped (its parent was killed too)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False
