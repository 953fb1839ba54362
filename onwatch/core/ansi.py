"""A log line's ANSI colours as HTML: the one place that reads terminal escape sequences.

The text is escaped before anything else, so a sequence can only ever become one of our
own class names, never markup. SGR colours (16, 256 and truecolor) and bold, italic and
underline become `<span class="...">`; every other escape sequence (cursor moves, window
titles, hyperlinks) and control character is dropped. Each line is rendered on its own,
as programs that colour their output reset at the end of a line: the page and the live
stream then show a line the same way whichever way it arrived.

Colours are classes, not style attributes: the Content-Security-Policy allows no inline
style. Truecolor is therefore shown as the nearest of the 256 palette colours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST), other two-byte escapes.
_CSI = r"\x1b\[(?P<params>[0-?]*)(?P<inter>[ -/]*)(?P<final>[@-~])"
_OSC = r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
_ESC = r"\x1b[ -/]*[0-~]?"
SEQUENCE = re.compile(f"{_CSI}|{_OSC}|{_ESC}")
# Control characters other than tab; a carriage return is handled before (see `visible`).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# xterm's default palette for the 16 basic colours; the rest is computed.
BASIC = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0),
    (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0),
    (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip
CUBE = (0, 95, 135, 175, 215, 255)


@dataclass(frozen=True)
class Style:
    fg: int | None = None
    bg: int | None = None
    bold: bool = False
    italic: bool = False
    underline: bool = False

    def classes(self) -> str:
        names = [f"a-f{self.fg}"] if self.fg is not None else []
        names += [f"a-b{self.bg}"] if self.bg is not None else []
        names += [n for n, on in (("a-bold", self.bold), ("a-it", self.italic)) if on]
        names += ["a-ul"] if self.underline else []
        return " ".join(names)


PLAIN = Style()
# SGR codes that turn one attribute on or off.
FLAGS: dict[int, tuple[str, bool]] = {
    1: ("bold", True),
    22: ("bold", False),
    3: ("italic", True),
    23: ("italic", False),
    4: ("underline", True),
    24: ("underline", False),
}


def palette(index: int) -> tuple[int, int, int]:
    """The RGB of one of the 256 colours."""
    if index < 16:
        return BASIC[index]
    if index < 232:
        n = index - 16
        return CUBE[n // 36], CUBE[n // 6 % 6], CUBE[n % 6]
    grey = 8 + (index - 232) * 10
    return grey, grey, grey


def nearest(r: int, g: int, b: int) -> int:
    """The palette colour (16–255: the basic 16 differ between terminals) closest to RGB."""

    def distance(i: int) -> int:
        pr, pg, pb = palette(i)
        return (pr - r) ** 2 + (pg - g) ** 2 + (pb - b) ** 2

    return min(range(16, 256), key=distance)


def _extended(codes: list[int], i: int) -> tuple[int | None, int]:
    """The colour of `38;5;n` / `38;2;r;g;b` starting at codes[i] (the 38/48), and how many
    codes it used. A malformed one is no colour."""
    kind = codes[i + 1] if i + 1 < len(codes) else None
    if kind == 5 and i + 2 < len(codes):
        return (codes[i + 2] if 0 <= codes[i + 2] <= 255 else None), 3
    if kind == 2 and i + 4 < len(codes):
        rgb = codes[i + 2 : i + 5]
        return (nearest(*rgb) if all(0 <= c <= 255 for c in rgb) else None), 5
    return None, len(codes) - i


def _codes(params: str) -> list[int]:
    # `38:2::r:g:b` (ITU form, with an empty colour-space field) reads like `38;2;r;g;b`.
    parts = params.replace("::", ":").replace(":", ";").split(";")
    # At most 3 digits count (no code is larger): a step may print any number of them.
    return [int(p[:3]) if p.isdecimal() and p.isascii() else 0 for p in parts]


def apply(style: Style, params: str) -> Style:
    """The style after one SGR sequence (`ESC [ params m`)."""
    codes = _codes(params)
    i = 0
    while i < len(codes):
        code, used = codes[i], 1
        if code in (38, 48):
            colour, used = _extended(codes, i)
            style = replace(style, fg=colour) if code == 38 else replace(style, bg=colour)
        else:
            style = _simple(style, code)
        i += used
    return style


def _simple(style: Style, code: int) -> Style:
    if code == 0:
        return PLAIN
    if 30 <= code <= 37 or 90 <= code <= 97:
        return replace(style, fg=code - 30 if code < 90 else code - 82)
    if 40 <= code <= 47 or 100 <= code <= 107:
        return replace(style, bg=code - 40 if code < 100 else code - 92)
    if code in (39, 49):
        return replace(style, fg=None) if code == 39 else replace(style, bg=None)
    if code in FLAGS:
        name, value = FLAGS[code]
        return replace(style, **{name: value})
    return style  # blink, inverse, fonts…: shown plain


def visible(line: str) -> str:
    # A carriage return inside a line is a progress bar redrawing itself: a terminal shows
    # only what was written last.
    return line.rstrip("\r").rsplit("\r", 1)[-1]


def to_html(line: str) -> SafeString:
    """One log line as safe HTML with its colours as spans."""
    out: list[str] = []
    style = PLAIN
    at = 0
    line = visible(line)
    for found in SEQUENCE.finditer(line):
        _text(out, line[at : found.start()], style)
        at = found.end()
        sgr = found["final"] == "m" and not found["inter"]
        if sgr and found["params"][:1] not in ("<", "=", ">", "?"):
            style = apply(style, found["params"])
    _text(out, line[at:], style)
    return mark_safe("".join(out))  # noqa: S308  (every piece of text went through escape)


def _text(out: list[str], text: str, style: Style) -> None:
    text = CONTROL.sub("", text)
    if not text:
        return
    classes = style.classes()
    out.append(f'<span class="{classes}">{escape(text)}</span>' if classes else escape(text))


def stylesheet() -> str:
    """The CSS for every class `to_html` uses (static/onwatch/ansi.css is this, written
    out; a test keeps the two the same)."""
    rules = [".a-bold { font-weight: bold; }", ".a-it { font-style: italic; }"]
    rules.append(".a-ul { text-decoration: underline; }")
    for i in range(256):
        hex_ = "#{:02x}{:02x}{:02x}".format(*palette(i))
        rules.append(f".a-f{i} {{ color: {hex_}; }}")
        rules.append(f".a-b{i} {{ background-color: {hex_}; }}")
    return "\n".join(rules) + "\n"
