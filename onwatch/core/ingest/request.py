"""The ASGI side of ingest: what a fast route sees of a request, its body, the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onwatch.core.ingest import Answer

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    """What a fast route needs from a request."""

    method: str
    path: str
    query: bytes
    remote_addr: str
    user_agent: str
    declared: int | None  # Content-Length
    incoming_id: str | None  # X-Request-ID, as sent
    host: tuple[bytes, ...]  # the host and scheme its answer headers were learned for
    headers: Headers  # all of them, as the ASGI scope has them (names in lower case)


def screen(scope: Scope, methods: frozenset[str], max_body: int) -> Request | None:
    """The request, or None when Django must take it: another method, a session cookie, an
    oversized body, an application mounted under a path."""
    method = scope["method"].upper()
    client = scope.get("client")
    if method not in methods or scope.get("root_path") or not client:
        return None
    agents: list[str] = []
    declared: int | None = None
    host, proto, incoming = b"", b"", None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            agents.append(value.decode("latin-1"))
        elif name == b"host":
            host = value
        elif name == b"x-forwarded-proto":
            proto = value
        elif name == b"x-request-id":
            incoming = value.decode("latin-1")
        elif name == b"content-length":
            if not value.isdigit() or declared is not None:
                return None
            declared = int(value)
        elif name == b"cookie":
            return None  # sessions: Django's business
    if declared is not None and declared > max_body:
        return None  # Django refuses it with its reason
    # Whether Caddy's token came with it (core/proxied.py): with a domain, headers learned
    # for Caddy's requests are not given to requests straight to the loopback port.
    proxied = b"proxied" if scope.get("onwatch.proxied") else b""
    key = (scope["scheme"].encode(), proto, host, proxied)
    return Request(
        method,
        scope["path"],
        scope.get("query_string", b""),
        client[0],
        ",".join(agents),
        declared,
        incoming,
        key,
        scope["headers"],
    )


async def read_body(
    receive: Receive, declared: int | None, max_body: int
) -> tuple[bytes | None, list[Message]] | None:
    """The body (None when Django must judge it) and the messages to replay to Django;
    None when the client disconnected."""
    replay: list[Message] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        replay.append(message)
        size += len(message.get("body", b""))
        if size > max_body:
            return None, replay
        if not message.get("more_body"):
            break
    body = b"".join(m.get("body", b"") for m in replay)
    # A body that is not what Content-Length said: Django judges it. Without one the body
    # was chunked (the server has joined it, and Django would read it all the same), as
    # @sentry/node sends every event: taken here, capped at max_body as it came.
    if declared is not None and len(body) != declared:
        return None, replay
    return body, replay


def replayed(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()

    return again


@dataclass(frozen=True, slots=True)
class Learned:
    """The headers of Django's answer, and where in them this answer's own go."""

    headers: Headers
    length_at: int
    id_at: int

    @classmethod
    def of(cls, headers: Headers) -> Learned:
        headers = list(headers)
        names = [name.lower() for name, _ in headers]
        for name in (b"Content-Length", b"X-Request-ID"):
            if name.lower() not in names:
                headers.append((name, b""))  # filled in per answer
                names.append(name.lower())
        return cls(headers, names.index(b"content-length"), names.index(b"x-request-id"))


async def respond(send: Send, answer: Answer, learned: Learned, request_id: bytes) -> None:
    """Answer with Django's headers, in Django's order (so an answer from here is byte for
    byte an answer from Django), with this answer's length and request ID."""
    headers = learned.headers.copy()
    headers[learned.length_at] = (headers[learned.length_at][0], b"%d" % len(answer.body))
    headers[learned.id_at] = (headers[learned.id_at][0], request_id)
    headers += answer.headers
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
