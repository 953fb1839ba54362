"""Grouping (onwatch/errors/grouping.py): which events make one issue."""

from __future__ import annotations

from typing import Any

import pytest

from onwatch.errors.grouping import grouping, normalised

pytestmark = pytest.mark.once


def crash(value: str, lineno: int = 10, *, in_app: bool = True, **more: Any) -> dict[str, Any]:
    frames = [
        {"module": "django.core", "function": "handle", "lineno": 5, "in_app": False},
        {"module": "shop.pay", "function": "charge", "lineno": lineno, "in_app": in_app},
    ]
    exc = {"type": "ValueError", "value": value, "stacktrace": {"frames": frames}}
    return {"exception": {"values": [exc]}, **more}


def test_in_app_frames_group_whatever_the_line_and_message() -> None:
    a, b = grouping(crash("order 1", 10)), grouping(crash("order 2 'x'", 99))
    assert a.hash == b.hash and a.by == "in-app frames"
    assert a.culprit == "shop.pay in charge"


def test_without_in_app_frames_the_normalised_message_groups() -> None:
    one = grouping(
        crash("user 42 at 0x7f3a 'bob' 550e8400-e29b-41d4-a716-446655440000", in_app=False)
    )
    two = grouping(crash('user 7 at 0x1 "eve" 123e4567-e89b-12d3-a456-426614174000', in_app=False))
    other = grouping(crash("disk full", in_app=False))
    assert one.hash == two.hash and one.by == "exception"
    assert one.hash != other.hash


def test_a_custom_fingerprint_comes_first() -> None:
    a = grouping(crash("x", fingerprint=["payments", "{{ default }}"]))
    b = grouping(crash("x", fingerprint=["payments"]))
    assert a.by == b.by == "fingerprint"
    assert a.hash != b.hash != grouping(crash("x")).hash


def test_messages_group_by_template() -> None:
    a = grouping({"logentry": {"message": "disk %s full", "formatted": "disk sda full"}})
    b = grouping({"logentry": {"message": "disk %s full", "formatted": "disk sdb full"}})
    assert a.hash == b.hash and a.by == "message"
    assert a.title == "disk sda full"


def test_variable_parts_are_replaced() -> None:
    text = "id 550e8400-e29b-41d4-a716-446655440000 from 10.0.0.1 at 0xff hash deadbeef12 'q' 42"
    assert normalised(text) == "id <uuid> from <ip> at <address> hash <hex> <quoted> <n>"


def test_a_message_with_the_stack_the_sdk_made_up_groups_by_its_message() -> None:
    # As @sentry/node sends every captureMessage: a synthetic exception, no type, whose
    # stack is where it was called; two messages from one line are two issues.
    def sent(text: str) -> dict[str, Any]:
        made_up = {"mechanism": {"type": "generic", "synthetic": True}}
        return {"message": text, **crash(text, 12)} | {
            "exception": {"values": [crash(text, 12)["exception"]["values"][0] | made_up]}
        }

    a, b = grouping(sent("export of 3 orders failed")), grouping(sent("the cache is cold"))
    assert a.by == "message" and a.hash != b.hash
    assert a.title == "export of 3 orders failed"
    assert a.culprit == "shop.pay in charge"  # where it was sent from, still
    assert grouping(sent("export of 7 orders failed")).hash == a.hash


def test_a_browser_frame_counts_by_the_path_of_its_url() -> None:
    def sent(url: str, lineno: int) -> dict[str, Any]:
        frame = {"filename": url, "function": "placeOrder", "lineno": lineno, "in_app": True}
        exc = {"type": "RangeError", "value": "negative", "stacktrace": {"frames": [frame]}}
        return {"exception": {"values": [exc]}}

    a = grouping(sent("https://shop.example/static/app.js?v=1", 3))
    b = grouping(sent("https://www.shop.example:8443/static/app.js?v=2#top", 9))
    assert a.hash == b.hash and a.by == "in-app frames"
    assert a.culprit == "/static/app.js in placeOrder"
    assert grouping(sent("https://shop.example/static/cart.js", 3)).hash != a.hash
    assert grouping(sent("app.js", 3)).culprit == "app.js in placeOrder"
