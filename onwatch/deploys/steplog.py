"""Every byte a step prints passes through StepLog: decoded, split into lines, appended to
the job's log line by line (its page follows it live) and kept per step (its tail).

The one seam for masking secrets: `_text` and `_rest` turn bytes into text that is safe to
store; everything written anywhere comes from them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from onwatch.core import jobs
from onwatch.core.masking import Masker

TAIL_LINES = 200


class StepLog:
    def __init__(self, job_id: int, secrets: Mapping[str, str], prefix: str = "") -> None:
        self.job_id = job_id
        # The service's secrets, in every form a program may print them, never leave here:
        # a secret split across chunks is held back until the next chunk shows it whole.
        self.masker = Masker(secrets)
        self.prefix = prefix
        self.partial = ""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def _text(self, chunk: bytes) -> str:
        return self.masker.feed(chunk)

    def _rest(self) -> str:
        return self.masker.flush()

    def mask(self, text: str) -> str:
        """A one-line reason or error, which may quote the step's output."""
        return self.masker.mask(text)

    def write(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + self._text(chunk)).split("\n")
        self._lines(lines)

    def say(self, text: str) -> None:
        """A line of onwatch's own about the step (what it runs, why it failed)."""
        self.write(text.encode() + b"\n")

    def close(self) -> None:
        rest = self.partial + self._rest()
        self.partial = ""
        self._lines(rest.split("\n") if rest else [])

    def _lines(self, lines: list[str]) -> None:
        """The lines of one chunk, stored in one go: a row each, but not a round trip each
        (a step printing short lines fast was stopped at its output limit only once they
        all were stored, half a minute for 1 MiB). Never held back for a later chunk: the
        page follows the log live."""
        lines = [line.rstrip("\r") for line in lines]
        self.tail.extend(lines)
        jobs.append_lines(self.job_id, [f"{self.prefix}{line}" for line in lines])

    def last(self, n: int) -> list[str]:
        return list(self.tail)[-n:]
