"""`onwatch services hosts SERVICE [HOST…]` as people run it: hosts set in deploy order,
what serves on each listed, and bad input refused in one line with exit code 2 (a host
that went away since its check too, against a real sshd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.procs import isolated, run
from tests.support.remote_servers import SshServer

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_services_hosts_sets_them_in_order_lists_them_and_refuses_in_one_line(
    tmp_path: Path, sshd: SshServer
) -> None:
    web1 = f"{sshd.user}@127.0.0.1:{sshd.port}"
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        call(child_deploys.add_service, env, "Acme", "shop", str(tmp_path / "repo"))
        added = run(["hosts", "add", web1], env)  # pinned; onwatch's key not on it yet
        sshd.authorize(added.stdout.splitlines()[2])
        call(child_deploys.mark_host_ready, env, web1)
        call(child_deploys.add_checked_host, env, "Acme", "deploy@10.0.0.9", False)
        alone = run(["services", "hosts", "shop"], env)
        both = run(["services", "hosts", "shop", web1, "this machine"], env)
        listed = run(["services", "hosts", "shop"], env)
        unchecked = run(["services", "hosts", "shop", "deploy@10.0.0.9"], env)
        unknown = run(["services", "hosts", "shop", "deploy@nowhere"], env)
        twice = run(["services", "hosts", "shop", "this machine", "this machine"], env)
        after = run(["services", "hosts", "shop"], env)
        back = run(["services", "hosts", "shop", "this machine"], env)
        sshd.stop()  # the host goes away after its check passed
        gone = run(["services", "hosts", "shop", web1], env)
        last = run(["services", "hosts", "shop"], env)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == "this machine\tnothing\n"
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines() == [
        f"{web1}\tnothing",
        "this machine\tnothing",
        f"onwatch: shop runs on {web1}, then this machine; its next deploy goes to each in turn",
    ]
    assert listed.stdout == f"{web1}\tnothing\nthis machine\tnothing\n"
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
    assert back.returncode == 0, back.stderr
    assert (gone.returncode, gone.stderr) == (
        2,
        f"onwatch: shop's hosts were not changed: {web1} cannot be reached (connection "
        "refused): check the address, the port and that sshd runs there; then set them again\n",
    )
    assert last.stdout == "this machine\tnothing\n"
