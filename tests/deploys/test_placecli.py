"""`onwatch services hosts SERVICE [HOST…]` as people run it: hosts set in deploy order,
what serves on each listed, and bad input refused in one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.procs import isolated, run

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_services_hosts_sets_them_in_order_lists_them_and_refuses_in_one_line(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        call(child_deploys.add_service, env, "Acme", "shop", str(tmp_path / "repo"))
        call(child_deploys.add_checked_host, env, "Acme", "deploy@10.0.0.7", True)
        call(child_deploys.add_checked_host, env, "Acme", "deploy@10.0.0.9", False)
        alone = run(["services", "hosts", "shop"], env)
        both = run(["services", "hosts", "shop", "deploy@10.0.0.7", "this machine"], env)
        listed = run(["services", "hosts", "shop"], env)
        unchecked = run(["services", "hosts", "shop", "deploy@10.0.0.9"], env)
        unknown = run(["services", "hosts", "shop", "deploy@nowhere"], env)
        twice = run(["services", "hosts", "shop", "this machine", "this machine"], env)
        after = run(["services", "hosts", "shop"], env)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == "this machine\tnothing\n"
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines() == [
        "deploy@10.0.0.7\tnothing",
        "this machine\tnothing",
        "onwatch: shop runs on deploy@10.0.0.7, then this machine; its next deploy goes to "
        "each in turn",
    ]
    assert listed.stdout == "deploy@10.0.0.7\tnothing\nthis machine\tnothing\n"
    assert (unchecked.returncode, unchecked.stderr) == (
        2,
        "onwatch: deploy@10.0.0.9 has not passed its check: check it on its page under Hosts "
        "(or onwatch hosts check deploy@10.0.0.9) and fix what it says first\n",
    )
    assert (unknown.returncode, unknown.stderr) == (
        2,
        "onwatch: deploy@nowhere is not a host of Acme: add it under Hosts "
        "(or onwatch hosts add)\n",
    )
    assert twice.returncode == 2 and twice.stderr.count("\n") == 1
    assert "this machine is named twice; name each host once" in twice.stderr
    assert after.stdout == listed.stdout  # refused: nothing changed
