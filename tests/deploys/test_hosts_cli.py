"""`onwatch hosts add|list|check|forget-key|remove` against a real sshd: the key to put on
the host is printed, a check prints one line per thing, and bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.procs import free_port, isolated, run
from tests.support.remote_servers import SshServer

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_hosts_commands_add_check_and_remove_a_host_and_refuse_bad_input_in_one_line(
    tmp_path: Path, sshd: SshServer
) -> None:
    name = f"{sshd.user}@127.0.0.1:{sshd.port}"
    closed = free_port()
    first_key = sshd.fingerprint()
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        added = run(
            [
                "hosts",
                "add",
                f"{sshd.user}@127.0.0.1",
                "--port",
                str(sshd.port),
                "--provider",
                "Hetzner",
                "--monthly-cost",
                "12.50EUR",
                "--no-https",
                "--http-port",
                "8080",
            ],
            env,
        )
        malformed = run(["hosts", "add", "example.org"], env)
        same_ports = run(
            ["hosts", "add", "deploy@127.0.0.1", "--http-port", "443", "--https-port", "443"], env
        )
        bad_cost = run(["hosts", "add", "deploy@127.0.0.1", "--monthly-cost", "lots"], env)
        unreachable = run(["hosts", "add", f"deploy@127.0.0.1:{closed}"], env)
        refused = run(["hosts", "check", name], env)
        key = added.stdout.splitlines()[2]
        sshd.authorize(key)
        checked = run(["hosts", "check", name], env)
        listed = run(["hosts", "list"], env)
        sshd.restart_with_new_host_key()
        changed = run(["hosts", "check", name], env)
        forgot = run(["hosts", "forget-key", name], env)
        again = run(["hosts", "check", name], env)
        # Root allowed from the command line too (the check's line said "the host's page").
        allowed = run(["hosts", "check", name, "--allow-sudo"], env)
        relisted = run(["hosts", "list"], env)
        local = run(["hosts", "remove", "this machine"], env)
        removed = run(["hosts", "remove", name], env)
        unknown = run(["hosts", "check", name], env)
        # onwatch's key is on the host already: adding it checks it at once.
        readded = run(["hosts", "add", name], env)
    # Added but not ready (onwatch's key is not on it yet): exit 1, and one line says so.
    assert added.returncode == 1, added.stderr
    assert added.stderr == (
        f"onwatch: {name} is added but not ready for deploys: onwatch's key is not on it yet "
        f"(above: where it goes); fix it, then run onwatch hosts check {name} --prepare\n"
    )
    assert added.stdout.splitlines()[:2] == [
        f"onwatch: added {name} (host key ssh-ed25519 {first_key})",
        f"Put this line in {sshd.user}'s ~/.ssh/authorized_keys on the host:",
    ]
    assert key.startswith("ssh-ed25519 ")
    assert added.stdout.endswith(f"then run: onwatch hosts check {name} --prepare\n")
    for bad in (malformed, bad_cost, same_ports, unreachable, refused, changed, local, unknown):
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "'example.org' is not user@host or user@host:port" in malformed.stderr
    assert "'lots' is not a monthly cost like 12.50EUR" in bad_cost.stderr
    assert "Caddy's HTTP, HTTPS and health ports must differ (given: 443, 443, 2020)" in (
        same_ports.stderr
    )
    assert f"127.0.0.1:{closed} did not show its host key" in unreachable.stderr
    assert f"{name} refused onwatch's key" in refused.stderr
    # Signed in: one line per thing, Python found, what is missing said; exit 1 as it is
    # not ready (no process manager on the test's sshd).
    assert checked.returncode == 1, checked.stderr
    out = checked.stdout.splitlines()
    assert len(out) == 10 and out[0].startswith("ok: Python 3.")
    assert out[-2] == "ok: Caddy may listen on port 8080"  # plain HTTP, on a high port
    assert out[-1] == f"ok: {name}'s clock is within 2 s of onwatch's"  # a deploy goes anyway
    assert "missing: No process manager: systemd is not running" in checked.stdout
    assert "missing: Nothing starts the apps again after a reboot" in checked.stdout
    assert "ok: builds run in a bubblewrap sandbox" in checked.stdout  # bwrap is here
    assert listed.stdout.splitlines() == [
        "this machine\tnot checked yet\t-\t-",
        f"{name}\tnot ready\tHetzner\t12.50 EUR a month",
    ]
    assert f"{name} showed another host key than the one pinned" in changed.stderr
    assert f"onwatch hosts forget-key {name}" in changed.stderr
    assert forgot.returncode == 0 and again.returncode == 1, again.stderr
    assert again.stdout.startswith("ok: Python 3.")
    assert allowed.stdout.splitlines()[0] == (
        f"onwatch: {name} may now sign in as root or use sudo (on purpose)"
    )
    rights = "root is root (allowed by an admin)" if sshd.user == "root" else "has no root"
    assert rights in allowed.stdout
    # Nothing else of the host changed: its Caddy port, provider and cost are kept.
    assert "ok: Caddy may listen on port 8080" in allowed.stdout
    assert relisted.stdout.splitlines()[1] == f"{name}\tnot ready\tHetzner\t12.50 EUR a month"
    assert "This machine is always a host" in local.stderr
    assert removed.returncode == 0 and removed.stdout == f"onwatch: removed {name}\n"
    assert f"there is no host {name!r} (there are: this machine)" in unknown.stderr
    assert readded.returncode == 1, readded.stderr
    assert readded.stderr.startswith(f"onwatch: {name} is added but not ready for deploys: ")
    assert "things a deploy needs are missing (the lines marked missing above)" in readded.stderr
    assert readded.stderr.count("\n") == 1
    assert readded.stdout.splitlines()[0].startswith(f"onwatch: added {name} (host key ")
    assert readded.stdout.splitlines()[1].startswith("ok: Python 3.")
    assert "missing: No process manager" in readded.stdout
