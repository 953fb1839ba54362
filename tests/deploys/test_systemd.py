"""systemd units driven with systemctl, for real: a systemd user manager of its own
(tests/support/systemd_user.py) runs them, and the switch runs on it as on supervisord."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onwatch.deploys import caddy, procman, systemd
from onwatch.deploys.procman import ProcmanError, Program
from onwatch.deploys.switch import Machine, program_name
from onwatch.deploys.systemd import Systemd
from tests.support.load import Load, fetch
from tests.support.switching import listen_port, own_machine, release, site, switch
from tests.support.systemd_user import UserManager, reaching, systemctl, user_manager

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def user() -> Iterator[UserManager]:
    with user_manager() as manager:
        yield manager


@pytest.fixture
def manager_env(user: UserManager) -> dict[str, str]:
    return user.env


@pytest.fixture
def machine(manager_env: dict[str, str]) -> Iterator[Machine]:
    with reaching(manager_env), own_machine() as m:
        yield m


def wait_for(check: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def test_a_machine_takes_systemd_where_it_answers_and_keeps_supervisord_it_had(
    machine: Machine, tmp_path: Path
) -> None:
    assert isinstance(machine.supervisor, Systemd)
    supervisord_root = tmp_path / "had"
    (supervisord_root / "supervisor").mkdir(parents=True)
    (supervisord_root / "supervisor" / "supervisord.conf").write_text("")
    assert isinstance(systemd.manager(supervisord_root), procman.Supervisor)


def test_the_setting_chooses_for_a_machine_new_to_onwatch_and_a_bad_one_is_said(
    manager_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with reaching(manager_env):
        monkeypatch.setenv("ONWATCH_PROCESS_MANAGER", "supervisord")
        assert isinstance(systemd.manager(tmp_path / "a"), procman.Supervisor)
        monkeypatch.setenv("ONWATCH_PROCESS_MANAGER", "upstart")
        with pytest.raises(ProcmanError, match=r"^ONWATCH_PROCESS_MANAGER='upstart' is not one"):
            systemd.manager(tmp_path / "b")
    monkeypatch.setenv("ONWATCH_PROCESS_MANAGER", "systemd")  # even with none answering
    assert isinstance(systemd.manager(tmp_path / "c"), Systemd)


def test_where_logind_would_stop_the_manager_at_logout_it_is_taken_only_with_linger(
    manager_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "BOOTED", tmp_path)  # as where systemd is PID 1
    monkeypatch.setattr(systemd, "LINGER", tmp_path / "linger")
    with reaching(manager_env):
        assert isinstance(systemd.manager(tmp_path / "a"), procman.Supervisor)
        (tmp_path / "linger").mkdir()
        (tmp_path / "linger" / systemd._user()).touch()
        assert isinstance(systemd.manager(tmp_path / "b"), Systemd)


def test_without_a_manager_supervisord_is_chosen_and_systemd_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no manager answers in there
    monkeypatch.setenv("ONWATCH_PROCESS_MANAGER", "auto")  # the tests' own is supervisord
    assert isinstance(systemd.manager(tmp_path / "root"), procman.Supervisor)
    with pytest.raises(ProcmanError, match=r"^systemd's user manager does not answer .*linger"):
        Systemd(tmp_path / "root").ensure_running()
    # Units given to it before: what they do cannot be told, and that is said.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    units = Systemd(tmp_path / "root")
    units.unit_file("web").parent.mkdir(parents=True)
    units.unit_file("web").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(ProcmanError, match=r"^systemd's user manager does not answer"):
        units.status("web")


def test_a_unit_runs_with_its_env_folder_and_log_and_none_of_onwatchs_environment(
    machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "onwatch-own-secret")
    units = machine.supervisor
    units.ensure_running()
    note = 'it\'s 100% "quoted" $HOME'
    command = 'echo "port=$PORT note=$NOTE in $(pwd)"; env; exec sleep 60'
    units.add(Program("web-1", command, tmp_path, {"PORT": "8123", "NOTE": note}))
    status = units.start("web-1")
    assert status.running and status.pid > 0
    wait_for(lambda: "PORT=8123" in units.log_of("web-1").read_text())
    said = units.log_of("web-1").read_text()
    assert f"port=8123 note={note} in {tmp_path}" in said
    assert "onwatch-own-secret" not in said
    units.remove("web-1")
    assert units.status("web-1") is None
    wait_for(lambda: not Path(f"/proc/{status.pid}").exists())
    assert units.log_of("web-1").exists()


def test_a_unit_that_crashes_is_started_again(machine: Machine, tmp_path: Path) -> None:
    units = machine.supervisor
    units.ensure_running()
    units.add(Program("web", "exec sleep 60", tmp_path))
    first = units.start("web").pid
    os.kill(first, 9)
    wait_for(lambda: (s := units.status("web")) is not None and s.running and s.pid != first)


def test_a_unit_that_dies_at_once_is_said_with_its_last_words(
    machine: Machine, tmp_path: Path
) -> None:
    units = machine.supervisor
    units.ensure_running()
    units.add(Program("bad", "echo no module named shop; exit 3", tmp_path))
    with pytest.raises(ProcmanError, match=r"^bad did not (start|stay up); .*no module named shop"):
        units.start("bad")
    units.add(Program("lost", "exec sleep 60", tmp_path / "gone"))
    with pytest.raises(
        ProcmanError,
        match=r"^lost did not (start|stay up); systemd could not "
        r"start it: its working folder could not be entered \(exit status 200\)$",
    ):
        units.start("lost")


def test_units_outlive_the_process_that_started_them(
    machine: Machine, manager_env: dict[str, str]
) -> None:
    script = (
        "import sys; from pathlib import Path; from onwatch.deploys.systemd import *; "
        "from onwatch.deploys.procman import Program; "
        "s = Systemd(Path(sys.argv[1])); s.ensure_running(); "
        "s.add(Program('web', 'exec sleep 60', Path('/'))); s.start('web')"
    )
    root = machine.supervisor.root
    env = {**os.environ, **manager_env}
    subprocess.run([sys.executable, "-c", script, str(root)], env=env, cwd=ROOT, check=True)
    web = Systemd(root).status("web")
    assert web is not None and web.running
    # Enabled: the manager starts it at boot (with linger, without a login).
    assert systemctl(manager_env, "is-enabled", Systemd(root).unit("web")) == "enabled"


def test_a_release_served_by_a_unit_is_switched_with_no_failed_request(
    machine: Machine, manager_env: dict[str, str]
) -> None:
    machine.ensure_running()
    shop = site(machine)
    machine.caddy.put_site(shop)
    switch(machine, shop, release("r1"))
    load = Load(listen_port(machine), shop.domain, slow_seconds=1.5).start()
    try:
        record = switch(machine, shop, release("r2"))
    finally:
        tally = load.stop()
    assert tally.failed == 0, tally.errors
    assert tally.ok > 20 and tally.slow_ok > 0 and {"r1", "r2"} <= set(tally.answers)
    units = machine.supervisor
    assert {s.name for s in units.all()} == {caddy.PROGRAM, program_name(record.port)}
    unit = Systemd(units.root).unit(program_name(record.port))
    assert systemctl(manager_env, "is-active", unit) == "active"
    # onwatch's side of it gone (this test process holds nothing of it): still served.
    assert fetch(listen_port(machine), shop.domain)[1].split()[0] == "r2"


def test_after_a_reboot_the_units_serve_again_without_onwatch(
    machine: Machine, user: UserManager
) -> None:
    machine.ensure_running()
    shop = site(machine)
    machine.caddy.put_site(shop)
    switch(machine, shop, release("r1"))
    user.stop()  # as at shutdown: every unit stopped
    with pytest.raises(OSError):
        fetch(listen_port(machine), shop.domain)
    user.start()  # as a lingering user's manager at boot, with no onwatch anywhere
    wait_for(lambda: _answer(listen_port(machine), shop.domain) == "r1", seconds=30)


def _answer(port: int, domain: str) -> str:
    try:
        return fetch(port, domain)[1].split()[0]
    except OSError:
        return ""


def test_a_long_log_is_rotated_when_its_unit_is_given_again(
    machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "LOG_BYTES", 10)
    units = machine.supervisor
    units.ensure_running()
    for n in range(3):
        units.add(Program("web", f"echo release {n}; exec sleep 60", tmp_path))
        units.start("web")
        wait_for(lambda n=n: f"release {n}" in units.log_tail("web"))
    log = units.log_of("web")
    assert log.with_name("web.log.2").read_text() == "release 0\n"
    assert log.with_name("web.log.1").read_text() == "release 1\n"
