"""The work that follows the answer: a thread per web process that runs the fast routes'
digests (a route's `digest`: one batch of what its `write` queued) while they find work.

Woken by the writer after each batch that queued something; otherwise it looks every
IDLE_SECONDS, for what a restart or another process left. The answers come first: a
batch waits until no request has come to the writer for QUIET_SECONDS (the digest shares
the process's GIL with the event loop, and SQLite's write lock with the writer; measured
on the bench, digesting beside a burst held its answers at 190/s and p99 445 ms), but at
most LONGEST_DEFER_SECONDS, so a load that never pauses is digested too (and a queue
that still fills up is refused with 429 at ERRORS_QUEUE_MAX). Not niced: the GIL, not
the CPU, is what it takes from the answers, and the WAL checkpoint is the one thread of a
web process below the others (tests/uptime/test_fastping.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connections

log = logging.getLogger("onwatch.ingest")

IDLE_SECONDS = 1.0
QUIET_SECONDS = 0.02
LONGEST_DEFER_SECONDS = 1.0
FAILED_SECONDS = 5.0  # after a digest failed (a database that does not answer): wait


class Digester:
    def __init__(self, last_request: Callable[[], float] = lambda: float("-inf")) -> None:
        # When the last request came (time.monotonic), to leave the process to it.
        self.last_request = last_request
        self.digests: list[Callable[[], int]] = []
        self.woken = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def add(self, digest: Callable[[], int]) -> None:
        if digest not in self.digests:
            self.digests.append(digest)

    def ensure(self) -> None:
        """Start the thread unless it runs (or there is nothing to digest, or this process
        must not: ONWATCH_INGEST_DIGEST)."""
        if self.thread is not None and self.thread.is_alive():
            return
        if not self.digests or not settings.INGEST_DIGEST or self.stopping:
            return
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="digest", daemon=True)
                self.thread.start()

    def wake(self) -> None:
        self.ensure()
        self.woken.set()

    def stop(self) -> None:
        """Finish the batch in progress and end the thread."""
        self.stopping = True
        self.woken.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join()

    def run(self) -> None:
        try:
            while not self.stopping:
                self.woken.clear()
                self.quiet()
                if not self.round():
                    self.woken.wait(IDLE_SECONDS)
        finally:
            connections.close_all()

    def quiet(self) -> None:
        """Wait until no request came for QUIET_SECONDS, or LONGEST_DEFER_SECONDS passed."""
        deadline = time.monotonic() + LONGEST_DEFER_SECONDS
        while not self.stopping and (now := time.monotonic()) < deadline:
            since = now - self.last_request()
            if since >= QUIET_SECONDS:
                return
            time.sleep(QUIET_SECONDS - since)

    def round(self) -> int:
        """Each route's digest once; how much they did."""
        done = 0
        for digest in self.digests:
            try:
                done += digest()
            except Exception:
                # What was queued stays queued: digested when the database answers again.
                log.exception("ingest: a digest failed; trying again in %g s", FAILED_SECONDS)
                time.sleep(FAILED_SECONDS)
        return done
