"""A small web app for switch tests and the bench, run by supervisord as a release's web
process: it answers its release name (RELEASE, also in its X-Release header), on
127.0.0.1:$PORT, with keep-alive.
/slow?s=1.5 answers after 1.5 s, POST answers the size of its body, /health answers 200
(500 with HEALTH=fail); every other answer has the status STATUS (200 by default), but
every FAIL_EVERY-th of them (counted across all clients) 500: a release that fails some
of its requests (FAIL_EVERY=5: 20 %); with SLOW_MS every answer but /health's takes
that much longer (a release that answers, but slowly). On
SIGTERM /health turns 503 at once, the app keeps serving for DRAIN_SECONDS, then exits
once its running requests have finished."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RELEASE = os.environ.get("RELEASE", "unnamed")
STATUS = int(os.environ.get("STATUS", "200"))
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
SLOW_SECONDS = int(os.environ.get("SLOW_MS", "0")) / 1000
answered = itertools.count(1)
draining = threading.Event()
running = 0
lock = threading.Lock()


@contextmanager
def busy() -> Iterator[None]:
    """Counts requests being answered (not idle keep-alive connections), for the exit."""
    global running
    with lock:
        running += 1
    try:
        yield
    finally:
        with lock:
            running -= 1


def status() -> int:
    return 500 if FAIL_EVERY and next(answered) % FAIL_EVERY == 0 else STATUS


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with busy():
            self._get()

    def _get(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/health":
            failing = os.environ.get("HEALTH") == "fail"
            self._answer(503 if draining.is_set() else 500 if failing else 200, "health")
            return
        if parts.path == "/slow":
            time.sleep(float(parse_qs(parts.query).get("s", ["1"])[0]))
        time.sleep(SLOW_SECONDS)
        self._answer(status(), RELEASE)

    def do_POST(self) -> None:
        with busy():
            size = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            time.sleep(SLOW_SECONDS)
            self._answer(status(), f"{RELEASE} {size}")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Release", RELEASE)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)

    def drain(signum: int, frame: object) -> None:
        draining.set()
        threading.Timer(float(os.environ.get("DRAIN_SECONDS", "1")), server.shutdown).start()

    signal.signal(signal.SIGTERM, drain)
    print(f"{RELEASE} listening on {os.environ['PORT']}", flush=True)
    server.serve_forever()
    deadline = time.monotonic() + 30
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"{RELEASE} stopped", flush=True)


if __name__ == "__main__":
    main()
