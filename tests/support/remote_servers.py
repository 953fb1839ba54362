"""Real remote repository servers for the backup tests (no tests here): OpenSSH's sshd
serving SFTP, and `rclone serve s3`, each on a free loopback port from a temp dir."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backups import RCLONE
from tests.support.procs import free_port

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def wait_port(port: int, what: str, banner: bytes = b"", timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                try:
                    if not banner or s.recv(64).startswith(banner):
                        return
                except OSError:
                    pass
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start on port {port}")


class SshServer:
    """sshd with its own host key, config and authorized_keys, for the user running the
    tests (root in CI). start() again after stop() listens on the same port. `env` is set
    in every session (sshd's SetEnv): what a host's own configuration would give."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = root / "host_ed25519"
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text("")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"Subsystem sftp {SFTP_SERVER}\n"
            # One line: sshd takes the first SetEnv line only.
            + ("SetEnv " + " ".join(f'"{k}={v}"' for k, v in env.items()) + "\n" if env else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.new_host_key()

    def url(self, path: Path) -> str:
        """restic's URL form with a port; the path after the host's slash is absolute."""
        return f"sftp://{self.user}@127.0.0.1:{self.port}/{path}"

    def new_host_key(self) -> None:
        self.host_key.unlink(missing_ok=True)
        Path(f"{self.host_key}.pub").unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True
        )

    def fingerprint(self) -> str:
        """`ssh-keygen -lf`'s "SHA256:…" of the host key."""
        out = subprocess.run(
            ["ssh-keygen", "-lf", f"{self.host_key}.pub"], capture_output=True, text=True
        ).stdout
        return out.split()[1]

    def authorize(self, public_key: str) -> None:
        self.authorized_keys.write_text(public_key.strip() + "\n")

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd's privilege separation directory; Debian makes it only when sshd starts
            # as a service.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with (self.root / "sshd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log
            )
        wait_port(self.port, "sshd", banner=b"SSH-2.0-")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart_with_new_host_key(self) -> None:
        self.stop()
        self.new_host_key()
        self.start()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = SshServer(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class S3Server:
    """`rclone serve s3` over a local directory, with one access key pair; the bucket
    `backups` exists."""

    access_key = "AKIAONWATCHTEST"
    secret_key = "s3-secret-9f1c2e7b"  # the test server's own

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "backups").mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"s3:http://127.0.0.1:{self.port}/backups"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RCLONE, "serve", "s3", str(self.root), f"--addr=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # The key pair through the environment: rclone's own argv stays clean too.
            env={
                **os.environ,
                "RCLONE_CONFIG": "/dev/null",
                "RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"',
            },
        )
        wait_port(self.port, "rclone serve s3")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3-root")
    server.start()
    try:
        yield server
    finally:
        server.stop()
