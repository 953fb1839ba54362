"""LocalPlace, this machine as a Place: its own tree taken as it is or copied without
.git, a command run in the sandbox with its last lines, slot ports never handed out twice,
and Caddy's refusals as PlaceError in one line. The switch itself is switch.py's (its own
tests); deploys across places are in test_several_hosts.py."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from onwatch.deploys import caddy
from onwatch.deploys.places import LocalPlace, PlaceError
from onwatch.deploys.switch import Machine

pytestmark = pytest.mark.once  # the sandbox and Caddy: one pass of scripts/test runs it


def test_a_tree_is_taken_where_it_was_checked_out_or_copied_without_git(
    tmp_path: Path,
) -> None:
    place = LocalPlace(Machine(tmp_path / "machine"))
    tree = tmp_path / "tree"
    (tree / ".git").mkdir(parents=True)
    (tree / "app.py").write_text("print('hi')\n")
    place.receive(str(tree), tree)
    assert (tree / ".git").is_dir()  # its own folder: nothing to copy
    there = tmp_path / "there"
    there.mkdir()
    (there / "stale.txt").write_text("from before")
    place.receive(str(there), tree)
    assert sorted(p.name for p in there.iterdir()) == ["app.py"]
    assert place.has_folder(str(there)) and not place.has_folder(str(tmp_path / "nope"))
    place.remove_folders([str(there)])
    assert not there.exists()


def test_a_command_runs_in_the_sandbox_and_says_its_last_lines(tmp_path: Path) -> None:
    place = LocalPlace(Machine(tmp_path / "machine"))
    # Where the step user can reach it (as root, steps run as another user).
    folder = Path(tempfile.mkdtemp(prefix="ow-run-"))
    folder.chmod(0o777)
    request_cleanup(folder)
    lines: list[str] = []
    env = {"PATH": "/usr/bin:/bin", "GREETING": "hello"}
    ran = place.run(
        str(folder),
        "for n in 1 2 3 4; do echo $GREETING $n; done; exit 3",
        env,
        30,
        lines.append,
        threading.Event(),
    )
    assert (ran.exit_code, ran.reason) == (3, None)
    assert lines == ["hello 1", "hello 2", "hello 3", "hello 4"]
    assert ran.last_lines == ["hello 2", "hello 3", "hello 4"]
    slow = place.run(str(folder), "sleep 30", env, 1, lines.append, threading.Event())
    assert slow.exit_code is None and slow.reason is not None and "time limit" in slow.reason


def request_cleanup(folder: Path) -> None:
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def test_slot_ports_are_never_handed_out_twice_and_caddys_refusals_are_one_line(
    tmp_path: Path,
) -> None:
    first, second = LocalPlace(Machine(tmp_path / "a")), LocalPlace(Machine(tmp_path / "b"))
    ports = first.free_ports(2) + second.free_ports(2)
    assert len(set(ports)) == 4
    with pytest.raises(PlaceError) as refused:
        first.put_site(caddy.Site("*.example.com", (ports[0], ports[1])))
    assert "\n" not in str(refused.value) and str(refused.value)
    # Nothing of those slots was ever set up: stopping them starts nothing.
    first.stop_serving({ports[0], ports[1]})
    assert not (tmp_path / "a" / "supervisor").exists()
