"""A plain server-sent events client for tests: reads a real onwatch's event stream as it
comes, noting when each event arrived, and reconnects the way a browser's EventSource
does (with Last-Event-ID)."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Event:
    id: str = ""
    event: str = "message"
    data: str = ""
    comments: list[str] = field(default_factory=list)
    at: float = 0.0  # time.time() when its last line arrived


class Stream:
    def __init__(
        self, base_url: str, path: str, cookie: str, last_id: str = "", timeout: float = 10
    ) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname and parts.port
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        headers = {"Cookie": f"sessionid={cookie}", "Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def header(self, name: str) -> str:
        return self.response.getheader(name) or ""

    def next(self, timeout: float = 10) -> Event | None:
        """The next block of fields (an event, or comments alone), or None at the end."""
        assert self.conn.sock is not None
        self.conn.sock.settimeout(timeout)
        event, seen = Event(), False
        while True:
            try:
                raw = self.response.readline()
            except (ConnectionError, http.client.IncompleteRead):
                raw = b""  # dropped (a proxy stopped): the end, as a browser sees it
            if not raw:
                return event if seen else None
            line = raw.decode().rstrip("\n")
            if line == "":
                if seen:
                    event.at = time.time()
                    return event
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                event.comments.append(value)
            elif name == "data":
                event.data = f"{event.data}\n{value}" if event.data else value
            elif name in ("id", "event"):
                setattr(event, name, value)

    def events(self, n: int, timeout: float = 10) -> list[Event]:
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            event = self.next(max(0.1, deadline - time.monotonic()))
            assert event is not None, f"the stream ended after {got}"
            if event.data or event.event != "message":
                got.append(event)
        return got

    def close(self) -> None:
        self.conn.close()
