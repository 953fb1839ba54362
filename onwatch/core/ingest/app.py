"""The ASGI app in front of Django: the fast routes, everything else to Django unchanged."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from onwatch.core.ingest import Accepted, Answer, Route, routes
from onwatch.core.ingest.limits import COUNTED
from onwatch.core.ingest.request import (
    App,
    Headers,
    Learned,
    Message,
    Receive,
    Request,
    Scope,
    Send,
    read_body,
    replayed,
    respond,
    screen,
)
from onwatch.core.ingest.writer import Job, Writer, busy, expire
from onwatch.core.middleware import request_id

log = logging.getLogger("onwatch.ingest")

# Longer than SQLite's busy timeout (20 s), so a locked database answers with its own error.
WAIT_SECONDS = 30.0
LEARNED_MAX = 64  # distinct hosts and schemes per route whose answer headers are kept
# How long a request waits for the answer that teaches its route's headers before it goes
# to Django itself. Django runs its (sync) views one at a time, so those waiting would
# wait as long in its queue; the body was read first, so a client that sends slowly holds
# up nobody.
LESSON_SECONDS = 10.0
# The threads of routes whose `accept` must not run in the event loop. A few: a big body
# takes one of them, the others keep taking requests.
ACCEPTING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-accept")


class Ingest:
    """`app` (Django) behind the fast routes given, or else those registered."""

    def __init__(
        self,
        app: App,
        writer: Writer | None = None,
        wait: float = WAIT_SECONDS,
        fast: list[Route] | None = None,
    ) -> None:
        self.app = app
        self.writer = writer or Writer()
        self.wait = wait
        self.routes = routes() if fast is None else fast
        self.prefixes = tuple(r.prefix for r in self.routes)
        self.answers: dict[tuple[str, tuple[bytes, ...]], Learned] = {}
        # Set when the request Django is answering to teach these headers has its answer.
        self.teaching: dict[tuple[str, tuple[bytes, ...]], asyncio.Event] = {}
        self.served = 0  # requests answered here, not by Django (for tests and curiosity)
        self.turned_away = 0  # refused because too many waited for the writer
        self.warned_at = float("-inf")
        for route in self.routes:
            if route.digest is not None:
                self.writer.digester.add(route.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Started by the first request of the process (not when the app is built, which may
        # be before the fork), so what a restart left queued is digested without waiting
        # for new events.
        self.writer.digester.ensure()
        route = self.route_of(scope)
        found = screen(scope, route.methods, route.max_body) if route is not None else None
        if route is None or found is None:
            await self.app(scope, receive, send)
            return
        received = await read_body(receive, found.declared, route.max_body)
        if received is None:
            return  # the client went away before it finished sending
        body, replay = received
        headers = self.answers.get((route.name, found.host)) or await self.lesson(route, found)
        if headers is None:
            # Django answers until it has shown the headers of a successful answer here.
            await self.teach(route, found.host, scope, replayed(replay, receive), send)
            return
        accepted, answer = await accepting(route, found, body) if body is not None else NONE
        if accepted is None:
            await self.app(scope, replayed(replay, receive), send)
            return
        rid = request_id(found.incoming_id)
        if answer is not None:
            self.spooled()
        else:
            # A route that spools had its rate limit counted with its spool, in the thread.
            if route.spool is None:
                answer = refused(route, accepted)
            answer = answer or await self.store(route, accepted, rid)
        if answer is None:
            scope[COUNTED] = True  # Django's view must not count it again
            await self.app(scope, replayed(replay, receive), send)
            return
        if answer.status < 400:
            self.served += 1
        await respond(send, answer, headers, rid.encode("latin-1"))

    def route_of(self, scope: Scope) -> Route | None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            return None
        path = scope["path"]
        return next(r for r in self.routes if path.startswith(r.prefix))

    async def store(self, route: Route, accepted: Accepted, rid: str) -> Answer | None:
        loop = asyncio.get_running_loop()
        job = Job(route, accepted.item, rid, loop, loop.create_future())
        if not self.writer.submit(job):
            self.overloaded()
            if route.busy is not None:
                return route.busy()
            return route.refusal(503, busy(route.noun), (b"Retry-After", b"5"))
        # A timer rather than wait_for: no task per request, and the job is never cancelled.
        timer = loop.call_later(self.wait, expire, job, self.wait)
        try:
            return await job.future
        finally:
            timer.cancel()

    def spooled(self) -> None:
        """A request a route kept in its spool: its digest has work, once requests pause."""
        self.writer.submitted = time.monotonic()
        self.writer.digester.wake()

    def overloaded(self) -> None:
        """Count a request turned away; say so in the log at most every ten seconds."""
        self.turned_away += 1
        now = time.monotonic()
        if now - self.warned_at >= 10:
            self.warned_at = now
            log.warning(
                "ingest: too many requests wait for the database; %d turned away so far "
                "(answered 503, send again)",
                self.turned_away,
            )

    async def lesson(self, route: Route, request: Request) -> Learned | None:
        """The headers Django is showing right now to a request on this route and host,
        once it has: the requests that come meanwhile (the first burst after a start) then
        take the fast route, rather than all waiting for Django's one thread in turn
        (measured: 32 at once, the last answered after 0.8-1.6 s)."""
        key = (route.name, request.host)
        taught = self.teaching.get(key)
        if taught is None or self.full():
            return None
        with suppress(TimeoutError):
            async with asyncio.timeout(LESSON_SECONDS):
                await taught.wait()
        # None when Django's answer showed nothing (a 404, say): Django answers this one.
        return self.answers.get(key)

    async def teach(
        self, route: Route, host: tuple[bytes, ...], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Django answers, its answer's headers learned; the first such request on the
        route and host is the one others wait for (lesson)."""
        key = (route.name, host)
        taught = self.teaching.setdefault(key, asyncio.Event())
        try:
            await self.app(scope, receive, self.learning(route, host, send))
        finally:
            if self.teaching.get(key) is taught:
                del self.teaching[key]
                taught.set()

    def learning(self, route: Route, host: tuple[bytes, ...], send: Send) -> Send:
        """`send` that keeps the headers of Django's successful answer on this route."""
        started: list[Message] = []
        key = (route.name, host)

        async def forward(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            elif (
                started
                and started[0]["status"] == 200
                and message.get("body") == route.teach
                and not message.get("more_body")
                and key not in self.answers
                and not self.full()
            ):
                self.learn(key, list(started[0]["headers"]))
            await send(message)

        return forward

    def full(self) -> bool:
        """Whether no more answers' headers are kept (nothing more is learned)."""
        return len(self.answers) >= LEARNED_MAX * len(self.routes)

    def learn(self, key: tuple[str, tuple[bytes, ...]], headers: Headers) -> None:
        if any(name.lower() == b"set-cookie" for name, _ in headers):
            return  # an answer for one client only
        self.answers[key] = Learned.of(headers)
        scheme, proto, host, _ = (part.decode("latin-1") for part in key[1])
        log.info("%s to %s://%s are now taken ahead of Django", key[0], proto or scheme, host)


NONE: tuple[None, None] = (None, None)


async def accepting(
    route: Route, request: Request, body: bytes
) -> tuple[Accepted | None, Answer | None]:
    """What `accept` made of the request, and the answer when the route's spool kept it
    (or its rate limit refused it before) in the same thread."""
    if not route.threaded:
        return route.accept(request, body), None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(ACCEPTING, accepted_or_spooled, route, request, body)


def accepted_or_spooled(
    route: Route, request: Request, body: bytes
) -> tuple[Accepted | None, Answer | None]:
    accepted = route.accept(request, body)
    if accepted is None or route.spool is None:
        return accepted, None
    # Counted here, once: a spooled item is kept before the event loop sees it again.
    limited = refused(route, accepted)
    if limited is not None:
        return accepted, limited
    return accepted, route.spool(accepted.item)


def refused(route: Route, accepted: Accepted) -> Answer | None:
    """The answer to a request over its route's rate limit; None when it may go on."""
    if route.limit.allow(accepted.key):
        return None
    return route.refusal(429, route.too_many(), (b"Retry-After", b"1"))
