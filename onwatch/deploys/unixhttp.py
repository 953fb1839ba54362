"""HTTP over a unix socket, for the local control interfaces onwatch drives (Caddy's admin
API, supervisord's XML-RPC): a socket file in onwatch's own folder is reachable only by
onwatch's user, where a loopback port is open to every user of the machine."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client

# Linux refuses longer socket paths (sun_path is 108 bytes with its final NUL).
MAX_SOCKET_PATH = 107


def path_problem(path: str) -> str | None:
    """Why a socket cannot live at `path`, or None."""
    if len(path.encode()) > MAX_SOCKET_PATH:
        return (
            f"the socket path {path} is longer than {MAX_SOCKET_PATH} bytes, which Linux "
            "refuses; use a shorter ONWATCH_DATA_DIR"
        )
    return None


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """xmlrpc.client over a unix socket: the URL's host is ignored."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return UnixConnection(self.path, self.timeout)
