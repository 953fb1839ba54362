"""Server-side scrubbing, before anything is stored: values under secret-sounding keys,
card numbers, PEM keys; IP addresses kept or truncated per project.

SDKs scrub too, but only when configured to, and each its own way: what reaches the
database must not depend on how a team set up its SDK.
"""

from __future__ import annotations

import functools
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


# A shortest secret: "auth=x" in text or code. Shorter strings hold none of them.
SHORTEST = 6
CARD_DIGITS = 13  # a card number has at least this many digits
NOT_DIGITS = bytes(set(range(128)) - set(b"0123456789"))
# Keys seen lately and what scrubbing makes of them (the same few hundred names in every
# event): looked up rather than searched.
KEY_CACHE = 4096
CACHED_KEY_LENGTH = 100
STRING_CACHE = 8192
CACHED_STRING_LENGTH = 200  # at most some 4 MB of strings kept


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
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = value.encode(errors="replace").decode()
    return value.replace("\x00", "") if "\x00" in value else value


def quiet(value: str) -> bool:
    """Whether `value` (storable) cannot hold a secret: no secret-sounding word, no
    percent-encoded name that could spell one, no PEM key, too few digits for a card
    number. Most strings of an event are such (names of files, functions, modules): they
    cost a few scans in C rather than every pattern below. Only ASCII text is judged
    here: a case-blind search matches some other letters to ASCII ones (the Kelvin sign
    to k), which lower() would not."""
    if len(value) < SHORTEST:
        return True
    if not value.isascii() or "%" in value or "-----BEGIN" in value:
        return False
    if FOLDED_SECRET.search(value.lower()) is not None:
        return False
    return len(value) < CARD_DIGITS or len(value.encode().translate(None, NOT_DIGITS)) < CARD_DIGITS


def text(value: str) -> str:
    value = storable(value)
    if quiet(value):
        return value
    if "-----BEGIN" in value:
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
    return isinstance(key, str) and _key(key)[1]


def _key(key: str) -> tuple[str, bool, bool]:
    """A dict key as stored, whether its value is a secret, whether its value is code."""
    # Long keys are not kept: a few events of made-up megabyte keys must not fill memory.
    return _known_key(key) if len(key) <= CACHED_KEY_LENGTH else _key_of(key)


def _key_of(key: str) -> tuple[str, bool, bool]:
    return storable(key), SECRET_KEYS.search(key) is not None, key in CODE_KEYS


_known_key = functools.lru_cache(maxsize=KEY_CACHE)(_key_of)


def string(value: str, in_code: bool) -> str:
    # Most strings of an event are in every event of its kind (file and function names,
    # lines of code): what they become is looked up rather than worked out again.
    if len(value) <= CACHED_STRING_LENGTH:
        return _known_string(value, in_code)
    return _string_of(value, in_code)


def _string_of(value: str, in_code: bool) -> str:
    value = storable(value)
    if quiet(value):
        return value  # neither text nor code: a secret in code needs a secret word too
    found = _query(value) if "=" in value else text(value)
    return code(found) if in_code else found


_known_string = functools.lru_cache(maxsize=STRING_CACHE)(_string_of)


def scrubbed(value: Any, depth: int = 0, in_code: bool = False) -> Any:
    """`value` (decoded JSON) with every secret replaced by "[Filtered]"; `in_code`: it
    is (part of) a frame's code or variables."""
    if depth > MAX_DEPTH:
        return FILTERED
    if isinstance(value, str):
        return string(value, in_code)
    if isinstance(value, dict):
        return _dict(value, depth, in_code)
    if isinstance(value, list):
        if value and isinstance(value[0], list) and all(_pair(v) for v in value):
            # Headers and query strings come as [[name, value], …] too.
            return [
                [k, FILTERED if secret_key(k) else scrubbed(v, depth + 1, in_code)]
                for k, v in value
            ]
        return [scrubbed(v, depth + 1, in_code) for v in value]
    return value


def _dict(value: dict[str, Any], depth: int, in_code: bool) -> dict[str, Any]:
    found = {}
    deep = depth >= MAX_DEPTH
    for k, v in value.items():
        key, secret, code_here = _known_key(k) if len(k) <= CACHED_KEY_LENGTH else _key_of(k)
        if secret and v is not None and v != "":
            found[key] = FILTERED
        elif type(v) is str and not deep:
            # Most values: the cache's answer without a call of scrubbed or string between.
            code_now = in_code or code_here
            if len(v) <= CACHED_STRING_LENGTH:
                found[key] = _known_string(v, code_now)
            else:
                found[key] = _string_of(v, code_now)
        else:
            found[key] = scrubbed(v, depth + 1, in_code or code_here)
    return found


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
