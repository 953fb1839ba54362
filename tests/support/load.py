"""Steady HTTP load for switch tests and the bench: clients that send requests without
pause through Caddy to one site, over kept-alive connections, over a new connection each
time, as POSTs, and slow requests that are still running when a switch happens. Every
request that does not come back 200 is counted with what went wrong."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

PAUSE = 0.2


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    slow_ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    # (when the request was sent, monotonic; which release answered), if asked for.
    log: list[tuple[float, str]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, sent: float, status: int, text: str, slow: bool = False) -> None:
        with self.lock:
            if status == 200:
                self.ok += 1
                self.slow_ok += slow
                self.answers[text.split()[0]] += 1
                if self.log is not None:
                    self.log.append((sent, text.split()[0]))
            else:
                self.failed += 1
                self.errors[f"HTTP {status} {text[:60]}"] += 1

    def error(self, e: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self.errors[f"{type(e).__name__}: {e}"[:100]] += 1


class Load:
    """`start()` the clients, `stop()` them and get the Tally."""

    def __init__(
        self,
        port: int,
        domain: str,
        kept_alive: int = 3,
        fresh: int = 1,
        posts: int = 1,
        slow: int = 2,
        slow_seconds: float = 1.0,
        keep_log: bool = False,
        pausing: int = 0,
    ) -> None:
        self.port, self.domain, self.slow_seconds = port, domain, slow_seconds
        self.tally = Tally(log=[] if keep_log else None)
        self.done = threading.Event()
        slow_path = f"/slow?s={slow_seconds}"
        kinds: list[tuple[str, str, bool, float]] = [("GET", "/", True, 0)] * kept_alive
        kinds += [("GET", "/", False, 0)] * fresh + [("POST", "/", True, 0)] * posts
        kinds += [("GET", slow_path, True, 0)] * slow
        # Browsers keep a connection open between clicks: idle when Caddy reloads.
        kinds += [("GET", "/", True, PAUSE)] * pausing
        self.threads = [
            threading.Thread(target=self._client, args=kind, daemon=True) for kind in kinds
        ]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=self.slow_seconds + 30)
        return self.tally

    def _client(self, method: str, path: str, keep_alive: bool, pause: float = 0) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self.done.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._one(connection, method, path, keep_alive)
            except (OSError, http.client.HTTPException) as e:
                self.tally.error(e)
                connection.close()
                connection = None
                time.sleep(0.01)
                continue
            if not keep_alive:
                connection.close()
                connection = None
            self.done.wait(pause)
        if connection is not None:
            connection.close()

    def _one(
        self, connection: http.client.HTTPConnection, method: str, path: str, keep_alive: bool
    ) -> None:
        headers = {"Host": self.domain, "Connection": "keep-alive" if keep_alive else "close"}
        body = b"x" * 512 if method == "POST" else None
        sent = time.monotonic()
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
        self.tally.count(sent, answer.status, text, slow=path.startswith("/slow"))


def fetch(port: int, domain: str, path: str = "/") -> tuple[int, str]:
    """One request on a new connection: its status and text."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": domain})
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()
