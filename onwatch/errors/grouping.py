"""Which issue an event belongs to. In order: the SDK's custom fingerprint, the in-app
frames of its stack (module and function, never line numbers, so an edit above the crash
does not make a new issue), the exception type with its message normalised, the message
template. VERSION is stored on each issue: new rules get a new number, so they can never
silently split or merge the issues made under the old ones.

Version 2 left out the exception an SDK makes up to carry a message's stack (`synthetic`)
and counts a browser frame by its URL's path. An event whose version-2 grouping finds no
issue joins the issue its version-1 grouping made, if there is one (`Grouping.earlier`), as
Sentry's fallback grouping does: the issues made before the change go on, not split."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

VERSION = 2

# Order matters: quoted values first (they may hold anything), numbers last.
VARIABLE_PARTS = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<quoted>"),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\b"),
        "<uuid>",
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<address>"),
    # Hex ids: six or more hex digits with at least one digit and one letter.
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]
DEFAULT = "{{ default }}"


@dataclass(frozen=True, slots=True)
class Grouping:
    hash: str
    by: str  # what decided it, shown on the issue
    title: str
    culprit: str
    earlier: str = ""  # the hash by the rules of VERSION - 1


def normalised(message: str) -> str:
    for pattern, placeholder in VARIABLE_PARTS:
        message = pattern.sub(placeholder, message)
    return message


def exceptions(event: dict[str, Any]) -> list[dict[str, Any]]:
    found = event.get("exception")
    values = found.get("values") if isinstance(found, dict) else found
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def raised(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The exceptions less those the SDK made up to carry a stack (`synthetic`):
    @sentry/node sends one with every captureMessage, its stack only where it was called.
    Such an event is its message, grouped and titled by it; else every message sent from
    one logging helper would be one issue. Its culprit and page still show that stack."""
    return [e for e in exceptions(event) if not synthetic(e)]


def synthetic(exception: dict[str, Any]) -> bool:
    mechanism = exception.get("mechanism")
    return isinstance(mechanism, dict) and mechanism.get("synthetic") is True


def frames(exception: dict[str, Any]) -> list[dict[str, Any]]:
    trace = exception.get("stacktrace")
    found = trace.get("frames") if isinstance(trace, dict) else None
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def in_app(exception: dict[str, Any], version: int = VERSION) -> list[str]:
    return [
        f"{where(f) if version >= 2 else where_v1(f)}.{f.get('function') or '?'}"
        for f in frames(exception)
        if f.get("in_app") is True
    ]


def where_v1(frame: dict[str, Any]) -> str:
    return str(frame.get("module") or frame.get("filename") or "?")


def where(frame: dict[str, Any]) -> str:
    """The frame's module, else its file. A browser's file is a URL: only its path counts,
    so one error stays one issue on every host name, page query and cache-busting ?v=."""
    module, filename = frame.get("module"), frame.get("filename")
    if module or not isinstance(filename, str):
        return str(module or "?")
    if "://" in filename:
        filename = "/" + filename.split("://", 1)[1].partition("/")[2]
    return filename.split("?", 1)[0].split("#", 1)[0] or "?"


def message_of(event: dict[str, Any]) -> tuple[str, str]:
    """The message's template (when the SDK sent one) and its formatted text."""
    entry = event.get("logentry") or event.get("message")
    if isinstance(entry, str):
        return entry, entry
    if isinstance(entry, dict):
        template = str(entry.get("message") or "")
        return template, str(entry.get("formatted") or template)
    return "", ""


def default_parts(event: dict[str, Any], version: int = VERSION) -> tuple[str, list[str]]:
    chain = raised(event) if version >= 2 else exceptions(event)
    stack = [part for exc in chain for part in (str(exc.get("type")), *in_app(exc, version))]
    if any(in_app(exc, version) for exc in chain):
        return "in-app frames", stack
    if chain:
        last = chain[-1]
        return "exception", [str(last.get("type")), normalised(str(last.get("value") or ""))]
    template = message_of(event)[0]
    if template:
        return "message", [normalised(template)]
    return "nothing", ["<no exception and no message>"]


def grouping(event: dict[str, Any]) -> Grouping:
    digest, by = hashed(event, VERSION)
    earlier, _ = hashed(event, VERSION - 1)
    return Grouping(digest, by, title(event), culprit(event), earlier)


def hashed(event: dict[str, Any], version: int) -> tuple[str, str]:
    """The event's grouping hash by the rules of `version`, and what decided it."""
    by, parts = default_parts(event, version)
    fingerprint = event.get("fingerprint")
    if isinstance(fingerprint, list) and fingerprint and fingerprint != [DEFAULT]:
        by = "fingerprint"
        parts = [p for item in fingerprint for p in (parts if item == DEFAULT else [str(item)])]
    return hashlib.sha256("\x00".join([by, *parts]).encode()).hexdigest(), by


def title(event: dict[str, Any]) -> str:
    chain = raised(event)
    if chain:
        last = chain[-1]
        value = str(last.get("value") or "")
        text = f"{last.get('type') or 'Error'}: {value}" if value else str(last.get("type"))
    else:
        text = message_of(event)[1] or "(no message)"
    return text.splitlines()[0][:255] if text else "(no message)"


def culprit(event: dict[str, Any]) -> str:
    for exc in reversed(exceptions(event)):  # a message's made-up stack says where, too
        for f in reversed(frames(exc)):
            if f.get("in_app") is True:
                return f"{where(f)} in {f.get('function') or '?'}"[:255]
    transaction = event.get("transaction")
    return str(transaction)[:255] if transaction else ""
