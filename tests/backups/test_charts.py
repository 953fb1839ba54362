"""The RTO trend chart: dots for drills, the target as a line, or named when far above."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from onwatch.backups.charts import BOTTOM, HEIGHT, TOP, Point, rto_trend

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

T0 = datetime(2026, 11, 1, 4, tzinfo=UTC)


def drills(*seconds: float) -> list[Point]:
    return [Point(T0 + timedelta(days=7 * i), s, True) for i, s in enumerate(seconds)]


def dot_heights(svg: str) -> list[float]:
    """How high each dot sits above the floor of the plot, as a share of its height."""
    floor, span = HEIGHT - BOTTOM, HEIGHT - TOP - BOTTOM
    return [
        (floor - float(cy)) / span for cy in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)
    ]


def test_a_target_near_the_drills_is_a_dashed_line_with_the_dots_below_it() -> None:
    svg = str(rto_trend(drills(40, 50, 45), 60, "RTO"))
    assert svg.count("<circle") == 3
    assert re.search(r'<line[^>]*class="target"', svg) and "RTO target: 60 s" in svg
    # The axis tops out at a round 2 min above the 60 s target: dots a third of the way up.
    assert all(0.3 < h < 0.45 for h in dot_heights(svg))


def test_a_target_far_above_the_drills_is_named_and_the_scale_follows_the_drills() -> None:
    svg = str(rto_trend(drills(1.2, 2.5, 1.8), 3600, "RTO"))
    assert not re.search(r'<line[^>]*class="target"', svg)
    assert re.search(r'<text[^>]*class="target"[^>]*>RTO target: 60 min, far above', svg)
    heights = dot_heights(svg)
    # The slowest drill reaches most of the way up instead of lying on the floor.
    assert max(heights) > 0.4 and min(heights) > 0.15


def test_no_drills_yet_still_shows_the_target() -> None:
    svg = str(rto_trend([], 600, "RTO"))
    assert "No measured drills yet" in svg and re.search(r'<line[^>]*class="target"', svg)


def test_a_drill_that_restored_nothing_is_a_red_dot_on_the_top_edge() -> None:
    points = [*drills(40, 50), Point(T0 + timedelta(days=21), None, False, "pack damaged")]
    svg = str(rto_trend(points, 60, "RTO"))
    assert svg.count("<circle") == 3
    assert svg.count('class="drill bad failed"') == 1
    assert max(dot_heights(svg)) == 1.0  # on the top edge, above every measured drill
    assert "failed, nothing restored (pack damaged)" in svg
