"""The ingest layer: high-volume requests (heartbeat pings today; error events and log
lines next) answered ahead of Django, stored in group commits by one writer thread.

An app registers a fast route (`register("onwatch.uptime.fastping:ROUTE")`, in its
AppConfig.ready; imported only when the web process builds its ASGI app). For a request
under the route's prefix, the layer
  1. screens it (method, size, no cookie) and asks the route's `accept`
     to parse it (in a thread for a route that asks for one); anything either declines
     goes to Django untouched, so Django's answers stay the reference;
  2. counts it against the route's rate limit (429 when over it, as Django's view does);
  3. hands the parsed item to the writer: one thread and one connection per process that
     writes all items waiting in one transaction (a group commit) through the route's
     `write`, which may still hand the request to Django (a state change, an unknown key);
  4. answers with the headers Django gave the first such answer for this host and scheme
     (its security headers among them) and a request ID of its own, as Django's
     middleware gives one.
Rows are model instances and statements are generated from the models (store.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onwatch.core.ingest.limits import Limit
    from onwatch.core.ingest.request import Request
    from onwatch.core.ingest.store import Store


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()  # beside the ones Django's answer shows


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request the route will try to take: `key` is what its rate limit counts by,
    `item` what `write` gets."""

    key: str
    item: Any


@dataclass(frozen=True)
class Route:
    name: str  # in log lines
    noun: str  # in answers: "onwatch could not store the <noun>"
    prefix: str  # only paths that start with it are offered to `accept`
    # With the whole body: what to write, or None for Django. In the event loop, or in a
    # thread when `threaded`.
    accept: Callable[[Request, bytes], Accepted | None]
    # In the writer thread, inside the batch's transaction: the answer, or None when
    # Django must take the request after all (nothing written by then).
    write: Callable[[Store, Any, datetime], Answer | None]
    limit: Limit
    # Django's answer body that shows the headers of a successful answer: the first one
    # per host and scheme is kept and replayed on this route's own answers.
    teach: bytes
    methods: frozenset[str] = frozenset(("GET", "POST", "HEAD"))
    max_body: int = 100 * 1024
    # The answer to a request over the rate limit.
    too_many: Callable[[], str] = lambda: "Too many requests; wait a moment and send again"
    # The answer when too many requests wait for the writer; None: 503 with Retry-After.
    # (Sentry's SDKs back off on 429 with X-Sentry-Rate-Limits, not on 503.)
    busy: Callable[[], Answer] | None = None
    # `accept` runs in a thread of its own (ACCEPTING in app.py): it may decompress and
    # parse a large body or look something up, which in the event loop would hold every
    # other request of the process meanwhile.
    threaded: bool = False
    # When given, used instead of `write` for all of the route's items of a batch at once
    # (one answer each, in order): a route whose item is many rows across tables can then
    # write each table once per batch rather than once per item.
    write_all: Callable[[Store, list[Any], datetime], list[Answer | None]] | None = None
    # When given, the layer's own refusals (busy, failed, no answer in time) carry their
    # text under this header too, as the route's own refusals do (Sentry's SDKs and Relay
    # say why from X-Sentry-Error).
    error_header: bytes = b""
    # When given, the work that follows the answer, for a route whose `write` queues what
    # it takes: one batch of the queue done, how much (0: none waiting). Run by the
    # digester's thread (digester.py), woken by each batch written.
    digest: Callable[[], int] | None = None
    # When given, offered the item first, in the thread of `accept` (a `threaded` route):
    # the answer when it kept the item itself (appended to a spool, for its `digest`),
    # None to hand it to the writer. An answer that needs no database write lock.
    spool: Callable[[Any], Answer | None] | None = None

    def refusal(self, status: int, text: str, *headers: tuple[bytes, bytes]) -> Answer:
        """A refusal by the layer itself: `text` is the body, and the error header's."""
        if self.error_header:
            headers = (*headers, (self.error_header, text.encode()))
        return Answer(status, text.encode() + b"\n", headers)


# "module:attribute" paths, in registration order: imported when the ASGI app is built, so
# a worker or prober never imports a route's modules.
_registered: dict[str, None] = {}


def register(path: str) -> None:
    """Add a fast route, by the import path of its Route (`"onwatch.uptime.fastping:ROUTE"`)."""
    _registered[path] = None


def routes() -> list[Route]:
    found = []
    for path in _registered:
        module, name = path.split(":")
        route = getattr(import_module(module), name)
        if not isinstance(route, Route):
            raise TypeError(f"{path} is not an ingest Route")
        found.append(route)
    return found
