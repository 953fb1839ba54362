"""supervisord driven over its XML-RPC socket, for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.deploys.procman import Program, Supervisor
from onwatch.deploys.switch import Machine
from tests.support.switching import own_machine

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def machine() -> Iterator[Machine]:
    with own_machine() as m:
        yield m


def wait_for(check: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def test_a_program_runs_with_its_port_env_folder_and_log(machine: Machine, tmp_path: Path) -> None:
    sup = machine.supervisor
    sup.ensure_running()
    command = 'echo "port=$PORT note=$NOTE in $(pwd)"; exec sleep 60'
    note = 'it\'s 100% "quoted" $HOME'
    sup.add(Program("web-1", command, tmp_path, {"PORT": "8123", "NOTE": note}))
    status = sup.start("web-1")
    assert status.running and status.pid > 0
    wait_for(lambda: "port=" in sup.log_tail("web-1"))
    assert sup.log_tail("web-1") == f"port=8123 note={note} in {tmp_path}"
    sup.remove("web-1")
    assert sup.status("web-1") is None
    # The process is gone, its log stays.
    wait_for(lambda: not Path(f"/proc/{status.pid}").exists())
    assert sup.log_of("web-1").exists()


def test_programs_get_none_of_onwatchs_environment(
    machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "onwatch-own-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://onwatch:pw@db/onwatch")
    sup = machine.supervisor
    sup.ensure_running()
    sup.add(Program("env", "env; exec sleep 60", tmp_path, {"APP": "yes"}))
    sup.start("env")
    wait_for(lambda: "APP=yes" in sup.log_of("env").read_text())
    seen = sup.log_of("env").read_text()
    assert "onwatch-own-secret" not in seen and "DATABASE_URL" not in seen


def test_supervisord_and_its_programs_outlive_the_process_that_started_them(
    machine: Machine,
) -> None:
    script = (
        "import sys; from pathlib import Path; from onwatch.deploys.procman import *; "
        "s = Supervisor(Path(sys.argv[1])); s.ensure_running(); "
        "s.add(Program('web', 'exec sleep 60', Path('/'))); s.start('web')"
    )
    root = machine.supervisor.root
    subprocess.run([sys.executable, "-c", script, str(root)], cwd=ROOT, check=True, timeout=60)
    sup = Supervisor(root)
    assert sup.answers()
    web = sup.status("web")
    assert web is not None and web.running
    pid = sup.pid()
    sup.ensure_running()  # answers: no second supervisord
    assert sup.pid() == pid


def test_a_program_that_crashes_is_started_again(machine: Machine, tmp_path: Path) -> None:
    sup = machine.supervisor
    sup.ensure_running()
    sup.add(Program("web", "exec sleep 60", tmp_path))
    first = sup.start("web").pid
    os.kill(first, 9)
    wait_for(lambda: (s := sup.status("web")) is not None and s.running and s.pid != first)


def test_a_bad_program_is_refused_in_one_line(machine: Machine) -> None:
    sup = machine.supervisor
    sup.ensure_running()
    with pytest.raises(ValueError, match=r"^'web 1' is not a program name"):
        sup.add(Program("web 1", "true", Path("/")))
    with pytest.raises(ValueError, match=r"^'1X' is not an environment variable name$"):
        sup.add(Program("web", "true", Path("/"), {"1X": "y"}))
    with pytest.raises(ValueError, match="must be an absolute path"):
        sup.add(Program("web", "true", Path("relative")))
    assert sup.all() == []
