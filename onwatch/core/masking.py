"""Hide secrets in text people see: pipeline logs, API answers, error messages.

A secret is hidden in every form a program is likely to print it in: as it is, line by line
(a PEM key), with `\\r\\n` line ends, base64 (standard or URL-safe, alone or inside a longer
base64 text), URL-encoded and JSON-escaped. Each is replaced by `[secret NAME]`, so people
can tell that something was hidden, and what.

Every place a form starts is found, overlapping ones too, so two secrets that overlap are
both hidden; a log masked as it streams hides the same characters as the whole text would.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

# Shorter values are not hidden: they would hide ordinary words and numbers all over the log
# while adding little protection. Masker.unmasked() names them so the page can say so.
MIN_LENGTH = 4
# Where base64 tools break lines: `base64` and Python's encodebytes, `openssl base64` and PEM.
WRAP_WIDTHS = (76, 64)
# A form is looked for by ANCHOR of its characters, from its rarest among the first SPAN.
ANCHOR = 8
SPAN = 16
# Characters from the most to the least common in build output (English text, paths,
# numbers, then capitals); any other character is rarer still.
COMMON = " etaoinsrlcdhupmfgybwvkxjqz./-_:=,()[]'\"\n0123456789ETAOINSRLCDHUPMFGYBWVKXJQZ"

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
        self._finder = _Finder(names)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def unmasked(self) -> list[str]:
        """Names of secrets too short to hide in logs."""
        return list(self._unmasked)

    def feed(self, chunk: bytes) -> str:
        """The text of `chunk` that is safe to show now; a tail that may be the start of a
        secret is held back until the next chunk shows whether it is."""
        text = self._held + self._decoder.decode(chunk)
        hits, cut = self._finder.scan(text)
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
        return _replace(text, self._finder.scan(text)[0])


class _Finder:
    """Finds forms by an anchor: ANCHOR characters of each form, starting at its rarest
    character among the first SPAN. One regex of all anchors, grouped by their first
    character, lets Python's re skip every character no anchor starts with in C, which is
    most of a log; a form is then checked whole where its anchor is."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.anchors: dict[str, list[tuple[str, int, str]]] = {}  # anchor -> form, offset, name
        for form in sorted(names, key=len, reverse=True):
            offset = _anchor_offset(form)
            anchor = form[offset : offset + ANCHOR]
            self.anchors.setdefault(anchor, []).append((form, offset, names[form]))
        self.by_first: dict[str, list[str]] = {}
        for anchor in self.anchors:
            self.by_first.setdefault(anchor[0], []).append(anchor)
        self.regex = _regex(self.by_first)
        # The starts of forms seen before their anchor is whole, for a text that ends there.
        self.starts = {
            form[:end]
            for group in self.anchors.values()
            for form, offset, _ in group
            for end in range(1, offset + ANCHOR)
        }

    def scan(self, text: str) -> tuple[list[Hit], int]:
        """Every form found whole, and where the earliest form that `text` may yet complete
        starts (len(text) when none)."""
        hits: list[Hit] = []
        unfinished = self._unfinished_start(text)
        found = self.regex.search(text) if self.regex else None
        while found is not None:
            at = found.start()
            for anchor in self.by_first[text[at]]:
                if text.startswith(anchor, at):
                    unfinished = min(unfinished, _check(text, at, self.anchors[anchor], hits))
            found = found.re.search(text, at + 1)  # anchors may overlap
        return hits, unfinished

    def _unfinished_start(self, text: str) -> int:
        """Where the longest end of `text` that may begin a form (its anchor not yet whole)
        starts."""
        for start in range(max(0, len(text) - SPAN - ANCHOR), len(text)):
            if text[start:] in self.starts:
                return start
        return len(text)


def _anchor_offset(form: str) -> int:
    last = min(len(form) - min(len(form), ANCHOR), SPAN - 1)
    return max(range(last + 1), key=lambda i: (_rarity(form[i]), -i))


def _rarity(char: str) -> int:
    found = COMMON.find(char)
    return len(COMMON) if found < 0 else found


def _regex(by_first: Mapping[str, list[str]]) -> re.Pattern[str] | None:
    if not by_first:
        return None
    branches = (
        re.escape(first) + "(?:" + "|".join(re.escape(a[1:]) for a in anchors) + ")"
        for first, anchors in by_first.items()
    )
    return re.compile("|".join(branches))


def _check(text: str, at: int, group: list[tuple[str, int, str]], hits: list[Hit]) -> int:
    """Adds the forms whose anchor is at `at` and that are whole in `text` to `hits`;
    returns where the earliest that `text` may yet complete starts (len(text) when none)."""
    unfinished = len(text)
    for form, offset, name in group:
        start = at - offset
        if start < 0:
            continue
        if text.startswith(form, start):
            hits.append((start, start + len(form), name))
        elif len(text) - start < len(form) and form.startswith(text[start:]):
            unfinished = min(unfinished, start)
    return unfinished


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
    """The whole encoding, padded or not, and in lines (long values), and the characters
    made of the value's bits alone at each of the three offsets it can have inside a longer
    encoded text."""
    found: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        found |= {whole, whole.rstrip("=")}
        for width in WRAP_WIDTHS:
            found |= {whole[i : i + width] for i in range(0, len(whole), width)}
        for shift in range(3):
            encoded = encode(bytes(shift) + data).decode()
            first = -(-8 * shift // 6)  # the first character with no bit of the bytes before
            end = 8 * (shift + len(data)) // 6  # ... and the last with none of those after
            found.add(encoded[first:end])
    return found


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
