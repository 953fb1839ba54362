"""SVG badges for a status page item: its state, and its uptime over 30 days.

Drawn like the flat badges READMEs are used to: a grey label on the left, a coloured value
on the right. Text widths are estimated and pinned with textLength, so the text always
fills its box whatever font the viewer has.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.template.loader import render_to_string

from onwatch.uptime.status_page import COLOURS, tier, uptime_text

# Average advance of 11 px Verdana, near enough for a box the text is then fitted to.
CHAR_WIDTH = 7
PADDING = 10
LABEL_MAX = 40
STATE_COLOURS = {
    "up": COLOURS["good"],
    "down": COLOURS["bad"],
    "maintenance": "#1f6feb",
    "paused": "#8a949e",
    "pending": "#8a949e",
}


@dataclass(frozen=True)
class Badge:
    label: str
    value: str
    colour: str

    @property
    def left(self) -> int:
        return len(self.label) * CHAR_WIDTH + 2 * PADDING

    @property
    def right(self) -> int:
        return len(self.value) * CHAR_WIDTH + 2 * PADDING

    @property
    def width(self) -> int:
        return self.left + self.right

    # Text is laid out at ten times the size and scaled down (as shields.io does), so
    # positions stay whole numbers and hinting stays crisp.
    @property
    def label_x(self) -> int:
        return self.left * 5

    @property
    def value_x(self) -> int:
        return self.left * 10 + self.right * 5

    @property
    def label_length(self) -> int:
        return len(self.label) * CHAR_WIDTH * 10

    @property
    def value_length(self) -> int:
        return len(self.value) * CHAR_WIDTH * 10


def shorten(label: str) -> str:
    return label if len(label) <= LABEL_MAX else label[: LABEL_MAX - 1] + "…"


def state_badge(label: str, state: str) -> str:
    return render(Badge(shorten(label), state, STATE_COLOURS[state]))


def uptime_badge(label: str, uptime: float | None) -> str:
    return render(Badge(shorten(label), uptime_text(uptime), COLOURS[tier(uptime)]))


def render(badge: Badge) -> str:
    # Django's autoescaping is XML-safe (&, <, >, quotes), so a label cannot break out.
    return render_to_string("uptime/status/badge.svg", {"b": badge})
