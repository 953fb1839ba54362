"""Sentry's protocol (onwatch/errors/protocol.py): keys, compressed bodies, envelopes."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from typing import Any

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from onwatch.errors import protocol
from onwatch.errors.protocol import ProtocolError

pytestmark = pytest.mark.once

BOMB = b"\0" * (protocol.MAX_UNPACKED + 1)


def test_the_key_comes_from_the_auth_header_or_the_query() -> None:
    header = "Sentry sentry_version=7, sentry_client=sentry.python/2.0, sentry_key=abc123"
    assert protocol.sentry_key(header, b"") == "abc123"
    assert protocol.sentry_key("", b"sentry_version=7&sentry_key=def456") == "def456"
    assert protocol.sentry_key("Sentry sentry_version=7", b"") is None


@pytest.mark.parametrize(
    "pack",
    [
        lambda b: (b, ""),
        lambda b: (gzip.compress(b), "gzip"),
        lambda b: (zlib.compress(b), "deflate"),
        lambda b: (brotli.compress(b), "br"),
        lambda b: (zstandard.ZstdCompressor().compress(b), "zstd"),
    ],
    ids=["plain", "gzip", "deflate", "br", "zstd"],
)
def test_the_key_in_the_envelope_header_is_read_from_its_first_line_alone(pack: Any) -> None:
    header = json.dumps({"dsn": "https://abc123@errors.example/7"}).encode()
    body, encoding = pack(header + b"\n" + b"\n" * protocol.MAX_UNPACKED)
    assert protocol.envelope_key(body, encoding) == "abc123"


@pytest.mark.parametrize(
    "body",
    [b"[" * 10_000, b'{"dsn": "http://[::1/7"}', b'{"dsn": 7}', b"{}", b"\xff\xfe", b""],
)
def test_an_envelope_header_without_a_usable_dsn_has_no_key(body: bytes) -> None:
    assert protocol.envelope_key(body, "") is None
    assert protocol.envelope_key(gzip.compress(body)[:-5], "gzip") is None


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),
        ("br", brotli.compress),
        ("zstd", zstandard.compress),
    ],
)
def test_each_encoding_unpacks_and_a_bomb_is_413(encoding: str, pack: object) -> None:
    assert callable(pack)
    assert protocol.unpacked(pack(b"hello"), encoding) == b"hello"
    with pytest.raises(ProtocolError) as refused:
        protocol.unpacked(pack(BOMB), encoding)
    assert refused.value.status == 413


def test_a_truncated_or_unknown_encoding_is_400() -> None:
    for body, encoding in [(gzip.compress(b"hello" * 100)[:-12], "gzip"), (b"x", "lzma")]:
        with pytest.raises(ProtocolError) as refused:
            protocol.unpacked(body, encoding)
        assert refused.value.status == 400


def test_items_with_and_without_length() -> None:
    body = b'{"event_id": "x"}\n{"type": "a", "length": 3}\n1\n2\n{"type": "b"}\n{"c": 1}\n'
    header, items = protocol.envelope(body)
    assert header == {"event_id": "x"}
    assert [(i.type, i.payload) for i in items] == [("a", b"1\n2"), ("b", b'{"c": 1}')]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1]\n",
        b'{}\n{"length": 2}\nab\n',
        b'{}\n{"type": "event", "length": 9}\nab\n',
        b'{}\n{"type": "event", "length": 1}\nabc\n',
        b'{}\n{"type": "event", "length": -1}\nab\n',
        b"{}\n\xff\xfe\n",
        b"{}\n" + b"[" * 100_000 + b"\n",
    ],
)
def test_a_malformed_envelope_is_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.envelope(body)
    assert refused.value.status == 400


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.dictionaries(
                st.sampled_from(["type", "length", "event_id"]),
                st.one_of(st.integers(-5, 50), st.text(max_size=8), st.none()),
            ).map(lambda d: json.dumps(d).encode()),
        ),
        max_size=8,
    )
)
def test_fuzzed_envelopes_parse_or_are_refused_with_400(lines: list[bytes]) -> None:
    try:
        header, items = protocol.envelope(b"\n".join(lines))
    except ProtocolError as e:
        assert e.status == 400
        return
    assert isinstance(header, dict)
    assert all(isinstance(i.type, str) and isinstance(i.payload, bytes) for i in items)


def test_millions_of_blank_lines_between_items_are_skipped_at_once() -> None:
    body = b"{}\n" + b"\n" * (18 * 2**20) + b'{"type": "event"}\n{}\n'
    started = time.monotonic()
    _, items = protocol.envelope(body)
    assert [item.type for item in items] == ["event"]
    assert time.monotonic() - started < 2  # one by one, it took seconds
