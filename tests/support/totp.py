"""RFC 6238 written out here, independent of the server's own implementation, so a test
that signs in with it also checks allauth's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time


def totp_now(secret: str, at: float | None = None) -> str:
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int(at if at is not None else time.time()) // 30
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"
