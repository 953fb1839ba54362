"""A REST repository whose server fails deletes for a while (an overloaded or restarting
server, not an append-only one): a small HTTP proxy in front of `rclone serve restic` that
answers the first few DELETEs of snapshots with an error of its choosing, then passes them
on."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.procs import free_port

# Hop-by-hop headers: the proxy's own connection, not the request's.
HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class FlakyDeletes:
    def __init__(self, upstream: int, failures: int, status: int = 500) -> None:
        self.upstream = upstream
        self.failures = failures
        self.status = status
        self.deletes = 0  # DELETEs of snapshots seen, failed or passed on
        self.port = free_port()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"rest:http://127.0.0.1:{self.port}/"

    def fails_now(self, method: str, path: str) -> bool:
        if method != "DELETE" or "/snapshots/" not in path:
            return False
        with self._lock:
            self.deletes += 1
            return self.deletes <= self.failures

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fails_now(self.command, self.path):
                    self._answer(proxy.status, [], b"try again later\n")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                status, got, data = proxy.forward(self.command, self.path, headers, body)
                self._answer(status, got, data)

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP:
                        self.send_header(name, value)
                # A HEAD answer tells the size of what a GET would send: restic reads it.
                sizes = [v for k, v in headers if k.lower() == "content-length"]
                head = self.command == "HEAD" and sizes
                self.send_header("Content-Length", sizes[0] if head else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> FlakyDeletes:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
