"""Behind onwatch's own Caddy (`onwatch up --domain`), only Caddy's word counts: the
X-Forwarded-* headers of a request without its token are dropped before uvicorn, the
fast routes and Django read them. Any process on this machine reaches the loopback port,
and with a forged X-Forwarded-For it would sign in as anyone's address (lock-outs, audit
entries) and with X-Forwarded-Proto pass for HTTPS."""

from __future__ import annotations

import hmac
from typing import cast

from uvicorn._types import ASGI3Application
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from onwatch.config import PROXY_HEADER
from onwatch.core.ingest.request import App, Receive, Scope, Send

# Where Caddy's requests come from: onwatch listens on loopback behind it. Its address is
# taken from the right of X-Forwarded-For past these (and ONWATCH_TRUSTED_PROXIES).
CADDY_PEERS = "127.0.0.1,::1"
# In the scope: whether the request carried Caddy's token (the fast routes keep apart what
# they learned from each kind).
PROXIED = "onwatch.proxied"
TOKEN_HEADER = PROXY_HEADER.lower().encode("latin-1")
FORWARDED = (b"x-forwarded-", b"forwarded")


class ProxyGate:
    """`app` behind uvicorn's proxy headers for requests with `token` alone (uvicorn's own
    handling is off when a domain is set: cli.cmd_web)."""

    def __init__(self, app: App, token: str, trusted: str) -> None:
        self.app = app
        self.token = token.encode("latin-1")
        peers = ",".join(p for p in (CADDY_PEERS, trusted.strip()) if p)
        self.forwarded = ProxyHeadersMiddleware(cast(ASGI3Application, app), peers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = [v for n, v in scope["headers"] if n == TOKEN_HEADER]
        if self.token and len(given) == 1 and hmac.compare_digest(given[0], self.token):
            await self.forwarded({**scope, PROXIED: True}, receive, send)  # type: ignore[arg-type]
            return
        headers = [(n, v) for n, v in scope["headers"] if not n.startswith(FORWARDED)]
        await self.app({**scope, "headers": headers, PROXIED: False}, receive, send)
