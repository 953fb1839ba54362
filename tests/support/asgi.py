"""A real uvicorn server for an ASGI app in a thread of the test process, and raw HTTP
requests to it (for tests that compare answers byte for byte)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.support.procs import free_port


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """A real uvicorn server for `app` on a free port, in a thread of this process."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def raw(port: int, method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    """One request on its own connection, as curl sends it; the whole raw answer."""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: curl/8.5.0", *headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("\r\n".join([*head, "Connection: close", "", ""]).encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def http(port: int, method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    """`raw`, less the Date and request ID (they differ from one answer to the next)."""
    answer = raw(port, method, path, body, *headers)
    varying = (b"date:", b"x-request-id:")
    return b"\r\n".join(
        line for line in answer.split(b"\r\n") if not line.lower().startswith(varying)
    )


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def header(answer: bytes, name: str) -> str | None:
    """The value of header `name` in a raw answer, None without it."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def header_names(answer: bytes) -> set[str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return {line.partition(":")[0].strip().lower() for line in head.split("\r\n")[1:]}
