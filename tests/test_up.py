from __future__ import annotations

import time
from pathlib import Path

from tests.procs import Running, isolated, wait_http


def test_up_starts_everything_prints_the_owner_link_and_stops_on_sigterm(tmp_path: Path) -> None:
    with isolated(tmp_path) as env, Running(["up"], env) as up:
        link = up.wait_for("/invite/", timeout=60).strip()
        assert link.startswith(up.base_url + "/invite/")
        up.wait_for("worker")
        wait_http(up.base_url + "/health/")
        assert (tmp_path / "data" / "keyring.json").stat().st_mode & 0o777 == 0o600
        started = time.monotonic()
        assert up.stop() == 0
        assert time.monotonic() - started < 10
        assert any("stopped" in line for line in up.lines)
