"""A worker's slots: each queue runs at most its own number of jobs at once, each on a
thread, so a queue that is full (two-hour backups) never keeps another (alert deliveries)
from starting. One claiming loop serves every queue: idle, it costs one query a poll."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from onwatch.core import jobs
from onwatch.core.models import Job

log = logging.getLogger("onwatch.worker")


class Pool:
    def __init__(
        self, name: str, sizes: dict[str, int], on_free: Callable[[], None] = lambda: None
    ) -> None:
        self.name = name
        self.on_free = on_free
        self.sizes = {queue: n for queue, n in sizes.items() if n > 0}
        self.busy = dict.fromkeys(self.sizes, 0)
        self.lock = threading.Lock()
        # Threads start on first use: an idle worker holds none.
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, sum(self.sizes.values())), thread_name_prefix="job"
        )

    def open_queues(self) -> list[str]:
        with self.lock:
            return [q for q, n in self.sizes.items() if self.busy[q] < n]

    def fill(self) -> int:
        """Claim due jobs while a queue that has one also has a free slot; jobs started."""
        started = 0
        while queues := self.open_queues():
            job = jobs.claim(self.name, queues=queues)
            if job is None:
                break
            self.start(job)
            started += 1
        return started

    def start(self, job: Job) -> None:
        # A job of a queue this worker does not serve (its queue changed since) runs in
        # the slot that claimed it: claim() only hands out jobs of open queues.
        with self.lock:
            self.busy[job.queue] = self.busy.get(job.queue, 0) + 1
        self.executor.submit(self.run, job)

    def run(self, job: Job) -> None:
        try:
            jobs.run(job, self.name)
        except Exception:
            # run() records the handler's failures; this is the database failing under it.
            log.exception("job %s could not be recorded", job)
        finally:
            connection.close()
            with self.lock:
                self.busy[job.queue] -= 1
            self.on_free()

    def running(self) -> int:
        with self.lock:
            return sum(self.busy.values())

    def close(self) -> None:
        """Let the running jobs finish (the supervisor's grace period bounds the wait)."""
        self.executor.shutdown(wait=True)
