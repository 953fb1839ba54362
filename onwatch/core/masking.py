"""Hide secrets in text people see: pipeline logs, API answers, error messages.

A secret is hidden in every form a program is likely to print it in: as it is, line by line
(a PEM key), with `\\r\\n` line ends, base64 (standard or URL-safe, alone or inside a longer
base64 text), URL-encoded and JSON-escaped. Each is replaced by `[secret NAME]`, so people
can tell that something was hidden, and what.

Matching is plain `str.find` over the first HEAD characters of each form: C-speed scans, far
faster than one big regex alternation (which Python tries branch by branch at every
character), and overlapping finds come for free, so two secrets that overlap are both hidden.
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

# Shorter values are not hidden: they would hide ordinary words and numbers all over the log
# while adding little protection. Masker.unmasked() names them so the page can say so.
MIN_LENGTH = 4
HEAD = 16

type Hit = tuple[int, int, str]  # start, end, name


class Masker:
    """Masks one stream (feed, then flush) or whole texts (mask)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        names: dict[str, str] = {}  # form -> name; a value two secrets share shows the first
        self._unmasked: list[str] = []
        for name, value in secrets.items():
            if 0 < len(value.strip()) < MIN_LENGTH:
                self._unmasked.append(name)
            for form in forms(value):
                names.setdefault(form, name)
        self._by_head = _group_by_head(names)
        self._head_prefixes = {head[:k] for head in self._by_head for k in range(1, len(head))}
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def unmasked(self) -> list[str]:
        """Names of secrets too short to hide in logs."""
        return list(self._unmasked)

    def feed(self, chunk: bytes) -> str:
        """The text of `chunk` that is safe to show now; a tail that may be the start of a
        secret is held back until the next chunk shows whether it is."""
        text = self._held + self._decoder.decode(chunk)
        hits, cut = self._scan(text)
        # A secret found whole but running past the cut waits too, or its end would be shown
        # without it next time.
        cut = min([start for start, end, _ in hits if start < cut < end], default=cut)
        self._held = text[cut:]
        return _replace(text[:cut], [(s, min(e, cut), n) for s, e, n in hits if s < cut])

    def flush(self) -> str:
        """The rest of the stream, masked; the masker can then take a new stream."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return self.mask(text)

    def mask(self, text: str) -> str:
        return _replace(text, self._scan(text)[0])

    def _scan(self, text: str) -> tuple[list[Hit], int]:
        """Every form found whole, and where the earliest form that `text` may yet complete
        starts (len(text) when none)."""
        hits: list[Hit] = []
        unfinished = self._unfinished_head(text)
        for head, group in self._by_head.items():
            at = text.find(head)
            while at >= 0:
                hit = _longest_at(text, at, group)
                if hit is not None:
                    hits.append(hit)
                if at < unfinished and _may_finish(text, at, group):
                    unfinished = at
                at = text.find(head, at + 1)
        return hits, unfinished

    def _unfinished_head(self, text: str) -> int:
        """Where the longest end of `text` that begins a form's head starts."""
        for start in range(max(0, len(text) - HEAD + 1), len(text)):
            if text[start:] in self._head_prefixes:
                return start
        return len(text)


def forms(value: str) -> set[str]:
    """Every form of `value` that is masked (none when it is too short to mask)."""
    stripped = value.strip()
    if len(stripped) < MIN_LENGTH:
        return set()
    found = _text_forms(stripped)
    for text in _newline_variants(stripped):
        found |= _url_forms(text) | _json_forms(text)
    for data in {value.encode(), stripped.encode()}:
        found |= _base64_forms(data)
    return {form for form in found if len(form) >= MIN_LENGTH}


def _text_forms(value: str) -> set[str]:
    """The value, each of its lines, and each short line with a neighbour (a short last line
    of a key printed line by line would otherwise be shown)."""
    lines = value.splitlines()
    found = set(_newline_variants(value)) | {line.strip() for line in lines}
    for i, line in enumerate(lines):
        if 0 < len(line.strip()) < MIN_LENGTH and len(lines) > 1:
            pair = lines[i - 1 : i + 1] if i else lines[:2]
            found |= {"\n".join(pair).strip(), "\r\n".join(pair).strip()}
    return found


def _newline_variants(value: str) -> set[str]:
    lines = value.splitlines()
    return {value, "\n".join(lines), "\r\n".join(lines)}


def _url_forms(value: str) -> set[str]:
    encoded = {
        quote(value, safe=""),
        quote(value),
        quote_plus(value, safe=""),
        quote(value, safe="!'()*"),  # JavaScript's encodeURIComponent
    }
    return encoded | {_lower_hex(form) for form in encoded}


def _lower_hex(encoded: str) -> str:
    parts = encoded.split("%")
    return parts[0] + "".join("%" + part[:2].lower() + part[2:] for part in parts[1:])


def _json_forms(value: str) -> set[str]:
    return {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def _base64_forms(data: bytes) -> set[str]:
    """The whole encoding, padded or not, and the characters made of the value's bits alone
    at each of the three offsets it can have inside a longer encoded text."""
    found: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        found |= {whole, whole.rstrip("=")}
        for shift in range(3):
            encoded = encode(bytes(shift) + data).decode()
            first = -(-8 * shift // 6)  # the first character with no bit of the bytes before
            end = 8 * (shift + len(data)) // 6  # ... and the last with none of those after
            found.add(encoded[first:end])
    return found


def _group_by_head(names: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Forms under their first HEAD characters, longest first (it wins where several fit)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for form in sorted(names, key=len, reverse=True):
        groups.setdefault(form[:HEAD], []).append((form, names[form]))
    return groups


def _longest_at(text: str, at: int, group: list[tuple[str, str]]) -> Hit | None:
    for form, name in group:
        if text.startswith(form, at):
            return at, at + len(form), name
    return None


def _may_finish(text: str, at: int, group: list[tuple[str, str]]) -> bool:
    """Whether the end of `text`, from `at`, is the unfinished start of a form."""
    if len(text) - at >= len(group[0][0]):  # longest first: every form fits, found or not
        return False
    tail = text[at:]
    return any(len(form) > len(tail) and form.startswith(tail) for form, _ in group)


def _replace(text: str, hits: Iterable[Hit]) -> str:
    """`text` with each run of overlapping hits replaced by the label of its first."""
    pieces: list[str] = []
    shown = 0  # text before this is already in pieces
    for start, end, name in sorted(hits, key=lambda hit: (hit[0], -hit[1])):
        if start < shown:  # overlaps the run just replaced: extend it
            shown = max(shown, end)
            continue
        pieces += [text[shown:start], f"[secret {name}]"]
        shown = end
    pieces.append(text[shown:])
    return "".join(pieces)
