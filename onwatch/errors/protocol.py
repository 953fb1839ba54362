"""Sentry's ingest protocol, the one module that knows it: the auth header, compressed
bodies, envelopes and the rate-limit header SDKs read. Pure functions, no database.

Envelopes: https://develop.sentry.dev/sdk/data-model/envelopes/ — a JSON header line, then
items, each a JSON header line and a payload of `length` bytes, or up to the next newline
when the header has no length.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import brotli
import zstandard

MAX_BODY = 1024 * 1024  # as sent (compressed or not)
MAX_UNPACKED = 20 * 1024 * 1024  # after decompression: more is a zip bomb
MAX_EVENT = 1024 * 1024  # one event's JSON
MAX_ATTACHMENT = 1024 * 1024  # one attachment, kept in the database
MAX_ITEMS = 100
# The envelope header is read alone, before the key is known: never more than this of it.
MAX_HEADER_LINE = 16 * 1024
BLANK_LINES = re.compile(rb"\n*")


class ProtocolError(Exception):
    """What is wrong with a request, in words for the SDK's log; `status` is the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Item:
    type: str
    headers: dict[str, Any]
    payload: bytes


def sentry_key(auth_header: str, query: bytes) -> str | None:
    """The public key from `X-Sentry-Auth: Sentry sentry_key=…, …` or `?sentry_key=`."""
    text = auth_header.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip() == "sentry_key" and value.strip():
            return value.strip()
    found = parse_qs(query.decode("latin-1")).get("sentry_key")
    return found[0] if found else None


def envelope_key(body: bytes, encoding: str) -> str | None:
    """The key of the DSN in the envelope's header (browser SDKs sending through a tunnel
    put it there), reading at most MAX_HEADER_LINE of the body: a request whose key is
    not known yet must not cost a decompression."""
    line = _line(head(body, encoding), 0)[0]
    try:
        header = json.loads(line)
        dsn = header.get("dsn") if isinstance(header, dict) else None
        key = urlsplit(dsn).username if isinstance(dsn, str) else None
    except (ValueError, RecursionError):
        return None
    return key or None


def head(body: bytes, encoding: str) -> bytes:
    """At most the first MAX_HEADER_LINE bytes of the body, decompressed; b"" when they
    cannot be (the full read says why, once the key is known)."""
    encoding = encoding.strip().lower()
    cap = MAX_HEADER_LINE
    try:
        if encoding in ("", "identity"):
            return body[:cap]
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, cap)
        if encoding == "deflate":
            try:
                return zlib.decompressobj(zlib.MAX_WBITS).decompress(body, cap)
            except zlib.error:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, cap)
        if encoding == "br":
            return bytes(brotli.Decompressor().process(body, output_buffer_limit=cap))[:cap]
        if encoding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body))
            return bytes(reader.read(cap))
    except (zlib.error, brotli.error, zstandard.ZstdError, EOFError):
        pass
    return b""


def unpacked(body: bytes, encoding: str) -> bytes:
    """The body decompressed, never past MAX_UNPACKED (413 beyond)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return _zlib(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            # Both forms are seen: zlib-wrapped (the RFC) and raw deflate.
            try:
                return _zlib(body, zlib.MAX_WBITS)
            except zlib.error:
                return _zlib(body, -zlib.MAX_WBITS)
        if encoding == "br":
            return _brotli(body)
        if encoding == "zstd":
            return _capped(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)))
    except (zlib.error, brotli.error, zstandard.ZstdError, EOFError) as e:
        raise ProtocolError(f"the body is not valid {encoding}: {e}") from None
    raise ProtocolError(f"unknown Content-Encoding {encoding!r}; send gzip, deflate, br or zstd")


def too_big() -> ProtocolError:
    return ProtocolError(f"the body unpacks to more than {MAX_UNPACKED // 2**20} MiB", 413)


def _zlib(body: bytes, wbits: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, MAX_UNPACKED + 1)
    if len(out) > MAX_UNPACKED or d.unconsumed_tail:
        raise too_big()
    if not d.eof:
        raise ProtocolError("the compressed body is truncated")
    return out


def _brotli(body: bytes) -> bytes:
    d = brotli.Decompressor()
    limit = MAX_UNPACKED + 1
    out = bytearray(d.process(body, output_buffer_limit=limit))
    # Past the limit the decoder keeps the rest for later calls with empty input.
    while len(out) <= MAX_UNPACKED and not d.can_accept_more_data():
        out += d.process(b"", output_buffer_limit=limit)
    if len(out) > MAX_UNPACKED:
        raise too_big()
    if not d.is_finished():
        raise ProtocolError("the compressed body is truncated")
    return bytes(out)


def _capped(reader: Any) -> bytes:
    out = bytes(reader.read(MAX_UNPACKED + 1))
    if len(out) > MAX_UNPACKED:
        raise too_big()
    return out


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        found = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError(f"the {what} is not valid JSON") from None
    if not isinstance(found, dict):
        raise ProtocolError(f"the {what} is not a JSON object")
    return found


def envelope(body: bytes) -> tuple[dict[str, Any], list[Item]]:
    """The envelope's header and items; ProtocolError when it is malformed."""
    line, rest = _line(body, 0)
    header = json_object(line, "envelope header")
    items: list[Item] = []
    at = rest
    while at < len(body):
        # Blank lines between items are allowed; skipped at once, not one by one (a body
        # of millions of them took seconds).
        blanks = BLANK_LINES.match(body, at)
        at = blanks.end() if blanks else at
        if at >= len(body):
            break
        item, at = _item(body, at)
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise ProtocolError(f"the envelope has more than {MAX_ITEMS} items")
    return header, items


def _line(body: bytes, at: int) -> tuple[bytes, int]:
    end = body.find(b"\n", at)
    return (body[at:], len(body)) if end < 0 else (body[at:end], end + 1)


def _item(body: bytes, at: int) -> tuple[Item, int]:
    line, at = _line(body, at)
    headers = json_object(line, "item header")
    kind = headers.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("an item header has no type")
    length = headers.get("length")
    if length is None:
        payload, at = _line(body, at)
    elif isinstance(length, int) and not isinstance(length, bool) and length >= 0:
        if at + length > len(body):
            raise ProtocolError(f"a {kind} item is cut short: {length} bytes promised")
        payload = body[at : at + length]
        at += length
        if body[at : at + 1] not in (b"", b"\n"):
            raise ProtocolError(f"a {kind} item is longer than its length says")
        at += 1
    else:
        raise ProtocolError(f"a {kind} item has an invalid length")
    return Item(kind, headers, payload), at


def rate_limits(seconds: int, reason: str) -> tuple[tuple[bytes, bytes], ...]:
    """Retry-After and X-Sentry-Rate-Limits (all categories, for this project)."""
    return (
        (b"Retry-After", b"%d" % seconds),
        (b"X-Sentry-Rate-Limits", f"{seconds}::project:{reason}".encode()),
    )


def dsn(scheme: str, host: str, key: str, project_id: int) -> str:
    return f"{scheme}://{key}@{host}/{project_id}"
