"""Uptime bars and response-time charts as inline SVG, drawn on the server from rollups.

No JavaScript and no style attributes (the Content-Security-Policy forbids both): colours
are SVG presentation attributes, hover text is an SVG <title>. Built with ElementTree so
every label is escaped and the output is always well-formed XML.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from onwatch.uptime.rollups import Point

SVG_NS = "http://www.w3.org/2000/svg"
GOOD, WARN, BAD, EMPTY = "#2e7d32", "#e0a100", "#c62828", "#d0d5da"
LINE, GRID, MUTED = "#1f6feb", "#dde2e6", "#5b6670"
# A day under this much uptime shows amber, under WARN_BELOW red: a single failed check
# in a day of minute checks (99.93 %) is worth a glance, an hour down (95.8 %) is not fine.
GOOD_FROM, WARN_FROM = 99.9, 99.0

BAR_W, BAR_GAP, BAR_H = 6, 2, 34
CHART_W, CHART_H = 720, 160
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 8, 22


def level(uptime: float | None) -> str:
    if uptime is None:
        return "none"
    if uptime >= GOOD_FROM:
        return "good"
    return "warn" if uptime >= WARN_FROM else "bad"


FILL = {"none": EMPTY, "good": GOOD, "warn": WARN, "bad": BAD}


def percent_text(uptime: float | None) -> str:
    """Two decimals, rounded down: a day with one failure never reads as 100.00 %."""
    if uptime is None:
        return "no checks"
    return f"{math.floor(uptime * 100) / 100:.2f} %"


def _svg(width: int, height: int, label: str, css: str) -> ET.Element:
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "viewBox": f"0 0 {width} {height}",
            "class": css,
            "role": "img",
            "aria-label": label,
        },
    )
    ET.SubElement(root, "title").text = label
    return root


def _safe(root: ET.Element) -> SafeString:
    # Built from escaped text only (ElementTree escapes every attribute and text node).
    return mark_safe(ET.tostring(root, encoding="unicode"))  # noqa: S308


def uptime_bars(days: Sequence[datetime], points: Sequence[Point], label: str) -> SafeString:
    """One bar per day in `days` (oldest first), coloured by that day's uptime; a day
    without a rollup is grey."""
    by_day = {p.start: p for p in points}
    root = _svg(len(days) * (BAR_W + BAR_GAP) - BAR_GAP, BAR_H, label, "uptime-bars")
    for i, day in enumerate(days):
        point = by_day.get(day)
        uptime = point.uptime if point else None
        bar = ET.SubElement(
            root,
            "rect",
            {
                "x": str(i * (BAR_W + BAR_GAP)),
                "y": "0",
                "width": str(BAR_W),
                "height": str(BAR_H),
                "rx": "1",
                "fill": FILL[level(uptime)],
                "class": f"bar {level(uptime)}",
            },
        )
        checks = f" of {point.checks:,} checks" if point and point.checks else ""
        day_text = timezone.localtime(day, timezone.get_default_timezone()).strftime("%Y-%m-%d")
        ET.SubElement(bar, "title").text = f"{day_text}: {percent_text(uptime)}{checks}"
    return _safe(root)


def nice_ceiling(value: float) -> int:
    """A round number at least `value` for the top of the axis: 1, 2, 5 × 10^n."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return int(10 * magnitude)  # not reached; keeps mypy sure of the return


def _x(at: datetime, since: datetime, until: datetime) -> float:
    span = (until - since).total_seconds() or 1.0
    return LEFT + (CHART_W - LEFT - RIGHT) * (at - since).total_seconds() / span


def _y(ms: float, top: int) -> float:
    return TOP + (CHART_H - TOP - BOTTOM) * (1 - ms / top)


def line_path(
    points: Sequence[Point], since: datetime, until: datetime, step: timedelta, top: int
) -> str:
    """The path of the average response times; a missing period breaks the line rather
    than drawing a slope across time nobody measured."""
    segments: list[list[str]] = []
    previous: datetime | None = None
    for p in points:
        if p.latency_avg_ms is None:
            previous = None
            continue
        # Each point sits at the middle of its period.
        xy = f"{_x(p.start + step / 2, since, until):.1f},{_y(p.latency_avg_ms, top):.1f}"
        if previous is not None and p.start - previous <= step:
            segments[-1].append(f"L{xy}")
        else:
            segments.append([f"M{xy}"])
        previous = p.start
    # A lone point is a zero-length line: with round caps it still shows as a dot.
    return " ".join(" ".join(s) if len(s) > 1 else f"{s[0]} h0" for s in segments)


def _text(parent: ET.Element, x: float, y: float, text: str, anchor: str = "end") -> None:
    attrs = {"x": f"{x:.1f}", "y": f"{y:.1f}", "font-size": "11", "fill": MUTED}
    ET.SubElement(parent, "text", {**attrs, "text-anchor": anchor}).text = text


def response_times(
    points: Sequence[Point],
    since: datetime,
    until: datetime,
    step: timedelta,
    label: str,
    time_format: str = "%H:%M",
) -> SafeString:
    """Average response time of each period (hour or day) from `since` to `until`."""
    root = _svg(CHART_W, CHART_H, label, "response-chart")
    measured = [p.latency_avg_ms for p in points if p.latency_avg_ms is not None]
    top = nice_ceiling(max(measured, default=0.0))
    for ms in (0, top // 2, top):
        y = _y(ms, top)
        ET.SubElement(
            root,
            "line",
            {"x1": str(LEFT), "x2": str(CHART_W - RIGHT), "y1": f"{y:.1f}", "y2": f"{y:.1f}"}
            | {"stroke": GRID, "stroke-width": "1"},
        )
        _text(root, LEFT - 6, y + 4, f"{ms:,} ms")
    zone = timezone.get_default_timezone()
    bottom = CHART_H - 6
    _text(root, LEFT, bottom, timezone.localtime(since, zone).strftime(time_format), "start")
    _text(root, CHART_W - RIGHT, bottom, timezone.localtime(until, zone).strftime(time_format))
    if not measured:
        _text(root, (LEFT + CHART_W) / 2, CHART_H / 2, "No response times yet", "middle")
        return _safe(root)
    ET.SubElement(
        root,
        "path",
        {
            "d": line_path(points, since, until, step, top),
            "fill": "none",
            "stroke": LINE,
            "stroke-width": "1.5",
            "stroke-linejoin": "round",
            "stroke-linecap": "round",
            "class": "latency",
        },
    )
    return _safe(root)
