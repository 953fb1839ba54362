"""git.py against real repositories: what a pipeline's checkout leaves in its workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from onwatch.deploys import git
from tests.support.deploys import commit, project


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
