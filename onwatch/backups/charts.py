"""The RTO trend: each drill's measured restore time as a dot, over time, against the
plan's target line. Inline SVG drawn on the server with ElementTree (escaped, well-formed,
no script and no style attributes: the Content-Security-Policy forbids both)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

SVG_NS = "http://www.w3.org/2000/svg"
GOOD, BAD, TARGET = "#2e7d32", "#c62828", "#b26a00"
LINE, GRID, MUTED = "#1f6feb", "#dde2e6", "#5b6670"
WIDTH, HEIGHT = 720, 180
FAR = 5  # a target this many times the slowest drill is named, not drawn
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 10, 24


@dataclass(frozen=True)
class Point:
    at: datetime
    # None: the drill failed before anything was restored, so there is no time to plot.
    seconds: float | None
    ok: bool  # verified and within the target
    why: str = ""  # why it failed, for the dot's tooltip


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 and seconds % 1 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


# Tops for the axis, in seconds: round numbers of seconds, minutes and hours.
NICE = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 4 * 3600, 8 * 3600]


def nice_ceiling(value: float) -> float:
    """A round duration at least `value` for the top of the axis."""
    for top in NICE:
        if value <= top:
            return float(top)
    day = 24 * 3600
    return float(math.ceil(value / day) * day)


def _text(parent: ET.Element, x: float, y: float, text: str, anchor: str = "end") -> None:
    attrs = {"x": f"{x:.1f}", "y": f"{y:.1f}", "font-size": "11", "fill": MUTED}
    ET.SubElement(parent, "text", {**attrs, "text-anchor": anchor}).text = text


def _xs(points: Sequence[Point]) -> list[float]:
    """By time; drills all at one moment (or a single one) spread evenly instead."""
    inner = WIDTH - LEFT - RIGHT
    first, last = points[0].at, points[-1].at
    span = (last - first).total_seconds()
    if span <= 0:
        step = inner / (len(points) + 1)
        return [LEFT + step * (i + 1) for i in range(len(points))]
    return [LEFT + inner * (p.at - first).total_seconds() / span for p in points]


def rto_trend(points: Sequence[Point], target_seconds: float, label: str) -> SafeString:
    """Oldest first. The target is a dashed line; a dot above it or unverified is red; a
    drill that restored nothing is a red dot on the top edge, above every measured one."""
    points = sorted(points, key=lambda p: p.at)
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "class": "rto-chart",
            "role": "img",
            "aria-label": label,
        },
    )
    ET.SubElement(root, "title").text = label
    measured = [p.seconds for p in points if p.seconds is not None]
    highest = max(measured, default=0.0)
    # Drills of seconds under a target of an hour would lie flat on the floor: then the
    # scale follows the drills and the target is named above them instead of drawn.
    far_above = bool(measured) and target_seconds > FAR * highest
    top = nice_ceiling(max(highest, 0.0 if far_above else target_seconds) * 1.1)

    def y(seconds: float | None) -> float:
        if seconds is None:
            return float(TOP)
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - seconds / top)

    for value in (0.0, top / 2, top):
        line = {"x1": str(LEFT), "x2": str(WIDTH - RIGHT), "y1": f"{y(value):.1f}"}
        ET.SubElement(root, "line", {**line, "y2": f"{y(value):.1f}", "stroke": GRID})
        _text(root, LEFT - 6, y(value) + 4, duration_text(value))
    named = f"RTO target: {duration_text(target_seconds)}"
    if far_above:
        attrs = {"x": str(WIDTH - RIGHT), "y": str(TOP + 12), "font-size": "11"}
        note = ET.SubElement(
            root, "text", {**attrs, "text-anchor": "end", "fill": TARGET, "class": "target"}
        )
        note.text = f"{named}, far above every drill"
    else:
        goal = {"x1": str(LEFT), "x2": str(WIDTH - RIGHT), "y1": f"{y(target_seconds):.1f}"}
        target = ET.SubElement(
            root,
            "line",
            {**goal, "y2": f"{y(target_seconds):.1f}", "stroke": TARGET, "stroke-width": "1.5"}
            | {"stroke-dasharray": "6 4", "class": "target"},
        )
        ET.SubElement(target, "title").text = named
    if not points:
        _text(root, (LEFT + WIDTH) / 2, HEIGHT / 2, "No measured drills yet", "middle")
        return mark_safe(ET.tostring(root, encoding="unicode"))  # noqa: S308
    zone = timezone.get_default_timezone()
    # Drills within two days of each other are told apart by their time of day.
    short = (points[-1].at - points[0].at).total_seconds() < 2 * 24 * 3600
    when = "%m-%d %H:%M" if short else "%Y-%m-%d"
    _text(root, LEFT, HEIGHT - 6, timezone.localtime(points[0].at, zone).strftime(when), "start")
    _text(root, WIDTH - RIGHT, HEIGHT - 6, timezone.localtime(points[-1].at, zone).strftime(when))
    xs = _xs(points)
    # The line joins measured restore times only: a failed drill has none to join.
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y(p.seconds):.1f}"
        for i, (x, p) in enumerate(
            (x, p) for x, p in zip(xs, points, strict=True) if p.seconds is not None
        )
    )
    if path:
        ET.SubElement(
            root,
            "path",
            {"d": path, "fill": "none", "stroke": LINE, "stroke-width": "1.5", "class": "rto"},
        )
    for x, p in zip(xs, points, strict=True):
        _dot(root, x, y(p.seconds), p, zone)
    # Built from escaped text only (ElementTree escapes every attribute and text node).
    return mark_safe(ET.tostring(root, encoding="unicode"))  # noqa: S308


def _dot(root: ET.Element, x: float, y: float, p: Point, zone: tzinfo) -> None:
    kind = "ok" if p.ok else "bad" if p.seconds is not None else "bad failed"
    dot = ET.SubElement(
        root,
        "circle",
        {"cx": f"{x:.1f}", "cy": f"{y:.1f}", "r": "4"}
        | {"fill": GOOD if p.ok else BAD, "class": f"drill {kind}"},
    )
    when = f"{timezone.localtime(p.at, zone):%Y-%m-%d %H:%M}"
    if p.seconds is None:
        said = f"{when}: failed, nothing restored"
    else:
        verdict = "restored and verified" if p.ok else "failed or over the target"
        said = f"{when}: {duration_text(p.seconds)}, {verdict}"
    ET.SubElement(dot, "title").text = f"{said} ({p.why})" if p.why and not p.ok else said
