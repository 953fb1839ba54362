"""The server-drawn SVG: well-formed, free of style attributes, and faithful to the rollups
it is given (bars per day, one vertex per measured hour, higher latency drawn higher)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from onwatch.uptime import charts
from onwatch.uptime.rollups import Point

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

NS = {"svg": charts.SVG_NS}
T0 = datetime(2025, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def point(start: datetime, checks: int, failures: int, avg: float | None) -> Point:
    return Point(start, checks, failures, avg, None if avg is None else int(avg))


def parse(svg: str) -> ET.Element:
    assert "style=" not in svg  # the CSP forbids style attributes
    return ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input


def vertices(path: str) -> list[tuple[str, float, float]]:
    return [(c, float(x), float(y)) for c, x, y in re.findall(r"([ML])([\d.]+),([\d.]+)", path)]


@pytest.fixture(autouse=True)
def utc(settings: object) -> None:
    settings.TIME_ZONE = "UTC"  # type: ignore[attr-defined]


def test_bars_draw_one_rect_per_day_coloured_by_that_days_uptime() -> None:
    days = [T0 + timedelta(days=i) for i in range(5)]
    points = [
        point(days[0], 1440, 0, 80.0),  # all passed
        point(days[1], 1440, 5, 80.0),  # 99.65 %: worth a glance
        point(days[2], 1440, 144, 80.0),  # 90 %
        # days[3]: no rollup at all
        point(days[4], 1000, 1, 80.0),  # 99.9 %
    ]
    root = parse(charts.uptime_bars(days, points, "Uptime of shop"))
    rects = root.findall("svg:rect", NS)
    assert len(rects) == 5
    assert [r.get("class") for r in rects] == [
        "bar good",
        "bar warn",
        "bar bad",
        "bar none",
        "bar good",
    ]
    assert [r.get("fill") for r in rects] == [
        charts.GOOD,
        charts.WARN,
        charts.BAD,
        charts.EMPTY,
        charts.GOOD,
    ]
    # Left to right, oldest first, never overlapping.
    xs = [float(r.get("x", "")) for r in rects]
    assert xs == sorted(xs) and len(set(xs)) == 5
    titles = [r.find("svg:title", NS).text for r in rects]  # type: ignore[union-attr]
    assert titles[1] == "2025-03-02: 99.65 % of 1,440 checks"
    assert titles[3] == "2025-03-04: no checks"
    assert root.find("svg:title", NS).text == "Uptime of shop"  # type: ignore[union-attr]


def test_a_day_with_one_failure_never_reads_as_a_hundred_percent() -> None:
    assert charts.percent_text(100 * 86399 / 86400) == "99.99 %"
    assert charts.percent_text(100.0) == "100.00 %"
    assert charts.percent_text(None) == "no checks"


def test_labels_are_escaped_not_injected() -> None:
    svg = charts.uptime_bars([T0], [], 'Uptime of <script>alert("x")</script>')
    assert "<script>" not in svg
    assert parse(svg).find("svg:title", NS).text == 'Uptime of <script>alert("x")</script>'  # type: ignore[union-attr]


def test_the_response_line_has_a_vertex_per_measured_hour_higher_when_slower() -> None:
    latencies = [100.0, 300.0, 200.0, 50.0]
    points = [point(T0 + i * HOUR, 60, 0, ms) for i, ms in enumerate(latencies)]
    root = parse(charts.response_times(points, T0, T0 + 4 * HOUR, HOUR, "Response time"))
    path = root.find("svg:path", NS)
    assert path is not None and path.get("class") == "latency"
    found = vertices(path.get("d", ""))
    assert [c for c, _, _ in found] == ["M", "L", "L", "L"]
    xs = [x for _, x, _ in found]
    ys = [y for _, _, y in found]
    assert xs == sorted(xs)
    # SVG's y grows downwards: the slowest hour is highest, the fastest lowest.
    assert sorted(range(4), key=lambda i: ys[i]) == sorted(range(4), key=lambda i: -latencies[i])
    # The axis tops out at a round number above the slowest hour.
    labels = [t.text for t in root.findall("svg:text", NS)]
    assert "500 ms" in labels and "0 ms" in labels


def test_an_hour_without_measurements_breaks_the_line() -> None:
    points = [
        point(T0, 60, 0, 100.0),
        point(T0 + HOUR, 60, 0, 120.0),
        point(T0 + 2 * HOUR, 60, 60, None),  # every check failed: no response time
        point(T0 + 3 * HOUR, 60, 0, 110.0),
        # T0 + 4h: no rollup at all
        point(T0 + 5 * HOUR, 60, 0, 130.0),
        point(T0 + 6 * HOUR, 60, 0, 90.0),
    ]
    root = parse(charts.response_times(points, T0, T0 + 7 * HOUR, HOUR, "Response time"))
    d = root.find("svg:path", NS).get("d", "")  # type: ignore[union-attr]
    assert [c for c, _, _ in vertices(d)] == ["M", "L", "M", "M", "L"]
    assert " h0" in d  # the lone hour still shows, as a dot


def test_no_measurements_draws_no_line_and_says_so() -> None:
    points = [point(T0, 60, 60, None)]
    root = parse(charts.response_times(points, T0, T0 + HOUR, HOUR, "Response time"))
    assert root.find("svg:path", NS) is None
    assert "No response times yet" in [t.text for t in root.findall("svg:text", NS)]


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (0.4, 1), (7, 10), (10, 10), (11, 20), (230, 500), (501, 1000)]
)
def test_the_axis_top_is_a_round_number_at_or_above_the_highest(value: float, top: int) -> None:
    assert charts.nice_ceiling(value) == top
