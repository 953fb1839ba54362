"""Which answers the watch counts as its release's, and its recent window (watch.py), from
answers as Caddy logs them."""

from __future__ import annotations

import pytest

from onwatch.deploys import caddy, watch

pytestmark = pytest.mark.once  # no database of onwatch's: the SQLite pass runs it

SLOT, OLD = "127.0.0.1:4001", "127.0.0.1:4002"


def test_the_old_slots_failures_while_it_drains_are_not_the_new_releases() -> None:
    answers = [
        caddy.Answer(101.0, 200, SLOT, 200, 0.01),
        caddy.Answer(101.0, 502, SLOT, None, 0.01),  # its own slot tried: its own
        caddy.Answer(101.0, 502, "", None, 5.0),  # no slot tried: the live one's
        caddy.Answer(101.0, 502, OLD, None, 0.01),  # the draining old slot's dial failure
        caddy.Answer(101.0, 200, OLD, 200, 0.01),
    ]
    found = watch.of_release(answers, SLOT, live_at=100.5)
    assert (found.requests, found.errors) == (3, 2)
