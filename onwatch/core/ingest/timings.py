"""Where a batch's time goes, for finding slow answers (bench/pings.py prints it).

When ONWATCH_INGEST_TIMINGS names a file, each web process's writer appends one line per
batch to it: the batch's size and, in ms, how long its oldest request waited for the
writer thread (`queue`), for the other web processes' writers (`turn`), for SQLite's
write lock (`begin`: BEGIN IMMEDIATE, where SQLite's own busy handler sleeps), writing its
rows (`write`), committing (`commit`), and for its event loop to take the answers
(`answer`); and a line per WAL checkpoint: when it started, how long it took and how
many pages it copied, so that batches written meanwhile can be told apart. Off by
default: nothing is measured or written then.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("onwatch.ingest")

STAGES = ("queue", "turn", "begin", "write", "commit", "answer")


@dataclass(slots=True)
class Batch:
    """The moments one batch passed, from time.perf_counter()."""

    size: int = 0
    queued: float = 0.0  # its oldest request handed to the writer
    taken: float = 0.0  # the writer thread picked it up
    turn: float = 0.0  # this process's turn to write
    began: float = 0.0  # the transaction holds SQLite's write lock
    written: float = 0.0
    committed: float = 0.0
    answered: list[float] = field(default_factory=list)  # each event loop took its answers

    def line(self) -> str:
        ends = (self.taken, self.turn, self.began, self.written, self.committed)
        starts = (self.queued, self.taken, self.turn, self.began, self.written)
        spans = [end - start for start, end in zip(starts, ends, strict=True)]
        spans.append(max(self.answered, default=self.committed) - self.committed)
        ms = (f"{s * 1000:.3f}" for s in spans)
        return " ".join(["batch", f"{self.queued:.6f}", str(self.size), *ms]) + "\n"


def now() -> float:
    return time.perf_counter()


class Recorder:
    """Appends a line per batch to the file; one write() each, so the lines of several
    processes never interleave. A file it cannot open or write is logged once and no
    longer recorded to: measuring never stops the writer or the WAL checkpoints."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.lock = threading.Lock()  # the writer's and the checkpoint thread's lines
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            self.stopped(e)

    def record(self, batch: Batch) -> None:
        self.write(batch.line())

    def checkpointed(self, started: float, pages: int) -> None:
        took = (now() - started) * 1000
        self.write(f"checkpoint {started:.6f} {took:.3f} {pages}\n")

    def write(self, line: str) -> None:
        with self.lock:
            if self.fd is None:
                return
            try:
                os.write(self.fd, line.encode())
            except OSError as e:
                os.close(self.fd)
                self.fd = None
                self.stopped(e)

    def stopped(self, error: OSError) -> None:
        log.warning(
            "ingest timings: cannot write to %s (%s); timings are no longer recorded, "
            "ingest goes on. Set ONWATCH_INGEST_TIMINGS to a file onwatch can write",
            self.path,
            error,
        )


@dataclass
class Spent:
    """What a timings file holds: per batch its start (s), size and stages (ms); per
    checkpoint its start (s), duration (ms) and pages."""

    batches: list[tuple[float, int, list[float]]] = field(default_factory=list)
    checkpoints: list[tuple[float, float, int]] = field(default_factory=list)

    def stage(self, name: str) -> list[float]:
        i = STAGES.index(name)
        return [spans[i] for _, _, spans in self.batches]

    def during_checkpoint(self) -> list[bool]:
        """For each batch, whether a checkpoint ran while its oldest request waited."""
        found = []
        for start, _, spans in self.batches:
            end = start + sum(spans) / 1000
            found.append(
                any(c < end and c + took / 1000 > start for c, took, _ in self.checkpoints)
            )
        return found


def read(path: str) -> Spent:
    spent = Spent()
    with open(path) as lines:
        for line in lines:
            kind, *values = line.split()
            # A line cut short when its process ended is left out.
            if kind == "batch" and len(values) == len(STAGES) + 2:
                spans = [float(v) for v in values[2:]]
                spent.batches.append((float(values[0]), int(values[1]), spans))
            elif kind == "checkpoint" and len(values) == 3:
                spent.checkpoints.append((float(values[0]), float(values[1]), int(values[2])))
    return spent
