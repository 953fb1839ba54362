"""Reading a request (onwatch/errors/intake.py): any body either reads or is refused with
a 4xx, never an exception the view would answer 500 to."""

from __future__ import annotations

import json
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onwatch.errors import grouping, intake, scrub
from onwatch.errors import keys as project_keys
from onwatch.errors.protocol import ProtocolError

pytestmark = pytest.mark.once

# The names onwatch reads, so the fuzzing reaches the code behind them.
NAMES = ["event_id", "exception", "values", "stacktrace", "frames", "in_app", "module",
         "function", "user", "ip_address", "request", "env", "REMOTE_ADDR", "headers",
         "discarded_events", "quantity", "reason", "aggregates", "crashed", "attrs",
         "release", "init", "status", "monitor_slug", "fingerprint", "logentry",
         "message", "formatted", "type", "value"]  # fmt: skip
keys = st.sampled_from(NAMES) | st.text(max_size=10)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
items = st.tuples(
    st.sampled_from(
        ["event", "attachment", "session", "sessions", "client_report", "check_in", "x"]
    ),
    json_values,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=5), st.sampled_from(["envelope", "store"]))
def test_any_json_in_any_item_reads_or_is_refused(
    found: list[tuple[str, object]], kind: str
) -> None:
    lines = [b"{}"]
    for item_type, payload in found:
        lines += [json.dumps({"type": item_type}).encode(), json.dumps(payload).encode()]
    body = (
        b"\n".join(lines)
        if kind == "envelope"
        else json.dumps(found[0][1] if found else {}).encode()
    )
    headers = {"x-sentry-auth": "Sentry sentry_key=abc"}
    try:
        with known_key():
            incoming = intake.accept(1, kind, headers, b"", body, "192.0.2.1")
    except ProtocolError as e:
        assert 400 <= e.status < 500
        return
    for event in incoming.events:
        assert len(event["event_id"]) == 32
        assert grouping.grouping(event).hash  # and it groups, whatever its shape
        scrub.addresses(event, "192.0.2.1", keep=False)


@pytest.mark.parametrize(
    ("item_type", "payload"),
    [("client_report", {"discarded_events": 5}), ("sessions", {"aggregates": "x"})],
)
def test_counted_items_of_the_wrong_shape_are_skipped(item_type: str, payload: object) -> None:
    body = b"\n".join(
        [b"{}", json.dumps({"type": item_type}).encode(), json.dumps(payload).encode()]
    )
    with known_key():
        incoming = intake.accept(1, "envelope", {"x-sentry-auth": "sentry_key=abc"}, b"", body, "")
    assert not incoming.tallies


def known_key() -> mock._patch[Callable[[int], tuple[str, bool]]]:
    """Project 1 takes key "abc": the reading is under test here, not the key's lookup."""
    return mock.patch.object(project_keys, "lookup", lambda project_id: ("abc", False))
