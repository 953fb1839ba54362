"""core/ssh.py, the one OpenSSH wrapper, against a real sshd: keys it makes log in, host
keys it pins are enforced, and no other module builds ssh command lines."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

import onwatch
from onwatch.core import ssh
from tests.support.remote_servers import SshServer, sshd

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

__all__ = ["sshd"]

ONWATCH = Path(onwatch.__file__).parent


def run(
    session: ssh.Session, where: ssh.Endpoint, *remote: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        session.args(where, *remote),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_command_runs_with_onwatchs_key_and_the_pinned_host_key(sshd: SshServer) -> None:
    keys = ssh.new_key_pair("onwatch host web-1\nsecond line")
    assert keys.public.startswith("ssh-ed25519 ") and "\n" not in keys.public
    sshd.authorize(keys.public)
    where = ssh.endpoint("127.0.0.1", sshd.port, sshd.user)
    known = ssh.scan_host_keys(where.host, where.port, what="host")
    assert ssh.fingerprints(known) == [f"ssh-ed25519 {sshd.fingerprint()}"]
    with ssh.Session(keys.private, known) as session:
        assert (session.key.stat().st_mode & 0o777) == 0o600
        done = run(session, where, "echo", "reached")
        assert done.returncode == 0, session.log_text()
        assert done.stdout == "reached\n"
    assert not session.dir.exists(), "the private key stays on disk after the session"


def test_a_changed_host_key_is_refused_and_ssh_says_so(sshd: SshServer) -> None:
    keys = ssh.new_key_pair("onwatch")
    sshd.authorize(keys.public)
    where = ssh.endpoint("127.0.0.1", sshd.port, sshd.user)
    known = ssh.scan_host_keys(where.host, where.port)
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    with ssh.Session(keys.private, known) as session:
        done = run(session, where, "echo", "reached")
        assert done.returncode != 0 and done.stdout == ""
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in session.log_text()


def test_a_host_that_does_not_answer_says_what_to_check(sshd: SshServer) -> None:
    sshd.stop()
    with pytest.raises(ssh.HostKeysUnavailable) as failed:
        ssh.scan_host_keys("127.0.0.1", sshd.port, what="host")
    assert str(failed.value).startswith(f"the host 127.0.0.1:{sshd.port} did not show its host key")
    assert str(failed.value).endswith("check the address, the port and that sshd runs there")


@pytest.mark.parametrize(("host", "user"), [("-oProxyCommand=x", ""), ("h", "-oX"), ("a b", "")])
def test_option_like_hosts_and_users_are_refused(host: str, user: str) -> None:
    with pytest.raises(ValueError, match="is not a"):
        ssh.endpoint(host, None, user)


def test_only_core_ssh_builds_ssh_command_lines_and_it_imports_no_app() -> None:
    builders = sorted(
        str(path.relative_to(ONWATCH))
        for path in ONWATCH.rglob("*.py")
        if any(word in path.read_text() for word in ("StrictHostKeyChecking", "ssh-keyscan"))
    )
    assert builders == ["core/ssh.py"]
    tree = ast.parse((ONWATCH / "core" / "ssh.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m for m in imported if m and m.startswith("onwatch.")} <= {"onwatch.config"}
