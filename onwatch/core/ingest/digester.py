"""The work that follows the answer: a thread per web process that runs the fast routes'
digests (a route's `digest`: one batch of what its `write` queued) while they find work.

Woken by the writer after each batch that queued something; otherwise it looks every
IDLE_SECONDS, for what a restart or another process left. Below the threads that answer
(niced): in a burst the answers come first and the queue grows, to be digested after.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from django.conf import settings
from django.db import connections

log = logging.getLogger("onwatch.ingest")

IDLE_SECONDS = 1.0
FAILED_SECONDS = 5.0  # after a digest failed (a database that does not answer): wait
NICE = 5


class Digester:
    def __init__(self) -> None:
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
        with suppress(OSError):  # Linux: the priority of this thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        try:
            while not self.stopping:
                self.woken.clear()
                if not self.round():
                    self.woken.wait(IDLE_SECONDS)
        finally:
            connections.close_all()

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
