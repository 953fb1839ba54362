from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import resolve

from onwatch.cli import owner_notice
from tests.support.child import call
from tests.support.child import core as child_core
from tests.support.procs import Running, alive, children_pids, free_port, isolated, wait_http


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as e:
        return e.code


def owner_link(up: Running) -> str:
    link = up.wait_for("/invite/", timeout=60).strip()
    assert link.startswith(up.base_url + "/invite/")
    return link


def test_up_starts_everything_prints_the_owner_link_and_stops_on_sigterm(tmp_path: Path) -> None:
    with isolated(tmp_path) as env, Running(["up"], env) as up:
        link = owner_link(up)
        up.wait_for("worker")
        wait_http(up.base_url + "/health/")
        assert status_of(link) == 200
        data = tmp_path / "data"
        assert (data / "keyring.json").stat().st_mode & 0o777 == 0o600
        assert (data / "secret_key").stat().st_mode & 0o777 == 0o600
        up.wait_for(f"created data directory {data}")
        up.wait_for("keep a copy of the key file")
        up.wait_for(" ready", nth=2)  # "worker <name> ready" and "scheduler ready"
        kids = children_pids(up)
        assert len(kids) >= 3 and all(alive(pid) for pid in kids)
        started = time.monotonic()
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
        # Checked by pid: no child outlives `onwatch up`, not even as a zombie.
        assert [pid for pid in kids if alive(pid)] == []
        up.wait_for("onwatch.up: stopped")


def test_up_takes_host_port_and_data_dir_as_options_over_the_environment(tmp_path: Path) -> None:
    with isolated(tmp_path) as env:
        port, elsewhere = free_port(), tmp_path / "chosen"
        options = ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(elsewhere)]
        with Running(["up", *options], env) as up:
            up.wait_for(f"running at http://localhost:{port} ")
            up.wait_for(f"data directory {elsewhere}")
            # The web child got the port too, not only the process that printed it.
            wait_http(f"http://127.0.0.1:{port}/health/", timeout=60)
            link = up.wait_for("/invite/", timeout=60).strip()
            assert link.startswith(f"http://localhost:{port}/invite/")
            assert status_of(link) == 200
            assert (elsewhere / "keyring.json").is_file()
            assert not (tmp_path / "data").exists()
            up.proc.send_signal(signal.SIGTERM)
            assert up.proc.wait(timeout=15) == 0


def link_path(notice: list[str]) -> str:
    [_, link] = notice
    return urlsplit(link.strip()).path


@pytest.mark.django_db
def test_each_start_without_an_owner_prints_a_new_link_and_voids_the_old_one() -> None:
    first, second = link_path(owner_notice()), link_path(owner_notice())
    client = Client()
    assert client.get(first).status_code == 404
    page = client.get(second)
    assert page.status_code == 200
    assert b"owner" in page.content.lower()


def test_once_there_is_an_owner_up_prints_no_link(members: dict[str, Any]) -> None:
    assert owner_notice() == []


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for kid in (task / "children").read_text().split():
            found += process_tree(int(kid))
    return found


def proportional_kib(pid: int) -> int:
    """PSS: the shared interpreter and libraries split between the processes using them,
    so the sum over a tree is what the machine spends on it."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))


def loads_postgres_driver(pid: int) -> bool:
    return "psycopg_binary" in Path(f"/proc/{pid}/maps").read_text()


def test_up_idles_in_six_processes_within_250_mib(tmp_path: Path) -> None:
    # Each spawned process costs a Python and Django of its own (~50 MiB): `onwatch up`
    # used to idle at some 330 MiB in 8 (two web workers and their manager, a scheduler
    # apart). Now two web workers are forked from a parent that loaded Django once, and an
    # install on SQLite never loads the PostgreSQL or MariaDB drivers.
    with isolated(tmp_path, migrated=True) as env, Running(["up"], env) as up:
        wait_http(up.base_url + "/health/", timeout=60)
        up.wait_for(" ready", nth=3, timeout=60)  # the worker, scheduler and prober
        pids = process_tree(up.proc.pid)
        names = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2:4] for pid in pids]
        # onwatch up, web and its 2 workers, worker (with the scheduler), prober
        assert len(pids) == 6, names
        mib = sum(proportional_kib(pid) for pid in pids) / 1024
        assert mib <= 250, f"{mib:.0f} MiB in {names}"
        on_postgres = "DATABASE_URL" in env
        assert [loads_postgres_driver(pid) for pid in pids[1:]] == [on_postgres] * 5, names


def test_the_owner_link_is_made_without_importing_every_view_and_the_api(tmp_path: Path) -> None:
    # `onwatch up` makes it in the process that then becomes the supervisor: the whole
    # URLconf would be some 0.3 s of CPU of every start wasted.
    with isolated(tmp_path, migrated=True) as env:
        out = call(child_core.print_owner_link_and_what_it_imported, env, migrate=True)
    link, imported = json.loads(out)
    assert resolve(urlsplit(link).path).url_name == "invite"
    assert imported == []
