"""Server-side scrubbing, before anything is stored: values under secret-sounding keys,
card numbers, PEM keys; IP addresses kept or truncated per project.

SDKs scrub too, but only when configured to, and each its own way: what reaches the
database must not depend on how a team set up its SDK.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import unquote_plus

FILTERED = "[Filtered]"
SECRET_WORDS = (
    "password", "secret", "passwd", "api_key", "apikey", "auth", "credentials", "mysql_pwd",
    "privatekey", "private_key", "token", "bearer", "session", "cookie",
)  # fmt: skip
SECRET_KEYS = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)
# The same on text case-folded first: about ten times faster than the case-blind search
# on a line of code, most of which name no secret.
FOLDED_SECRET = re.compile("|".join(SECRET_WORDS))
# `name=value` inside any text: a URL's query (`?token=…`), a message, an exception's value.
# A name starts where a run of name characters does and takes all of it (possessive): no
# backtracking, so a long run without "=" costs one pass, not one per character.
IN_TEXT = re.compile(r"(?<![\w.\-\[\]%])([\w.\-\[\]%]++)=([^&#\s\"'<>]+)")
# A string that is a query string or form body as a whole (`a=1&password=x`, `token=x`),
# not a URL or a sentence that holds one.
PLAIN_KEY = re.compile(r"[\w.\-\[\]%+]+")
# 13 to 19 digits, maybe grouped by spaces or dashes; Luhn decides.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*KEY-----.*?(?:-----END [A-Z0-9 ]*KEY-----|\Z)", re.DOTALL)
# In source code and values shown as code (a frame's context lines, its local variables'
# reprs): a secret-sounding name given a value, `password = "x"`, `"api_key": 'x'`,
# `token: str = "x"`, `password == "x"`, `Login(password='x')`. The value is a quoted
# literal or a bare word; a call, attribute or index (`get_token()`) is code, kept.
IN_CODE = re.compile(
    r"""(?<![\w$])([\w$]++)((?:["'`]\]?|\])?\s*+"""
    r"""(?::\s*+[\w.|\[\], ]{1,80}?\s*+=(?!=)|:=|[=!]==?|=>|=|:)\s*+[rbfuRBFU]{0,2})"""
    r"""("(?:[^"\\]|\\.)*+"?|'(?:[^'\\]|\\.)*+'?|`(?:[^`\\]|\\.)*+`?"""
    r"""|[^\s,;()\[\]{}<>"'`]++(?![(\[.]))"""
)
# Where an event carries code: the lines around each frame, and its variables.
CODE_KEYS = frozenset(("pre_context", "context_line", "post_context", "vars"))
MAX_DEPTH = 64  # deeper data is cut: nobody reads it, and it must not exhaust the stack


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return FILTERED if luhn(digits) else match.group(0)


def storable(value: str) -> str:
    """Without what JSON may carry but databases refuse: NUL (PostgreSQL) and lone
    surrogates (not UTF-8). Left in, one such event would fail its whole batch."""
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode(errors="replace").decode()
    return value.replace("\x00", "")


def text(value: str) -> str:
    value = storable(value)
    if "KEY-----" in value:
        value = PEM.sub(FILTERED, value)
    if "=" in value:
        value = IN_TEXT.sub(_in_text, value)
    return CARD.sub(_card, value)


def code(value: str) -> str:
    """A line of code or a value's repr (scrubbed as text already): a secret-sounding
    name's value in the forms code writes it."""
    if FOLDED_SECRET.search(value.casefold()) is None:
        return value
    return IN_CODE.sub(_in_code, value)


def _in_code(match: re.Match[str]) -> str:
    name, between, value = match.groups()
    if not secret_key(name):
        return match.group(0)
    quote = value[:1] if value[:1] in "\"'`" else ""
    closed = quote if len(value) > 1 and value.endswith(quote) else ""
    return f"{name}{between}{quote}{FILTERED}{closed}"


def _in_text(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={FILTERED}" if secret_key(unquote_plus(name)) else match.group(0)


def secret_key(key: object) -> bool:
    return isinstance(key, str) and SECRET_KEYS.search(key) is not None


def scrubbed(value: Any, depth: int = 0, in_code: bool = False) -> Any:
    """`value` (decoded JSON) with every secret replaced by "[Filtered]"; `in_code`: it
    is (part of) a frame's code or variables."""
    if depth > MAX_DEPTH:
        return FILTERED
    if isinstance(value, str):
        found = _query(value) if "=" in value else text(value)
        return code(found) if in_code else found
    if isinstance(value, dict):
        return {
            storable(k): FILTERED
            if secret_key(k) and v not in (None, "")
            else scrubbed(v, depth + 1, in_code or k in CODE_KEYS)
            for k, v in value.items()
        }
    if isinstance(value, list):
        if value and all(_pair(v) for v in value):
            # Headers and query strings come as [[name, value], …] too.
            return [
                [k, FILTERED if secret_key(k) else scrubbed(v, depth + 1, in_code)]
                for k, v in value
            ]
        return [scrubbed(v, depth + 1, in_code) for v in value]
    return value


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _query(value: str) -> str:
    """A query string or form body (`a=1&password=x`) with secret fields filtered, the rest
    as it was; any other text with `password=…` inside filtered by `text`."""
    fields = [part.partition("=") for part in value.split("&")]
    if not all(PLAIN_KEY.fullmatch(k) for k, _, _ in fields):
        return text(value)
    return "&".join(
        f"{k}={FILTERED}" if eq and secret_key(unquote_plus(k)) else text(k + eq + v)
        for k, eq, v in fields
    )


def ip(address: str, keep: bool) -> str:
    """The address, or its network part when not `keep` (IPv4 /24, IPv6 /48)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if keep:
        return str(parsed)
    prefix = 24 if parsed.version == 4 else 48
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False).network_address)


def addresses(event: dict[str, Any], remote_addr: str, keep: bool) -> None:
    """Resolve "{{auto}}" to the sender's address and keep or truncate every IP address
    the event carries where SDKs put them (user, request env)."""
    user = event.get("user")
    if isinstance(user, dict) and isinstance(user.get("ip_address"), str):
        found = user["ip_address"]
        user["ip_address"] = ip(remote_addr if found == "{{auto}}" else found, keep)
    request = event.get("request")
    env = request.get("env") if isinstance(request, dict) else None
    if isinstance(env, dict) and isinstance(env.get("REMOTE_ADDR"), str):
        env["REMOTE_ADDR"] = ip(env["REMOTE_ADDR"], keep)
