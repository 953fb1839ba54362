"""The public status page in real headless Chromium against a real `onwatch web`: the
90 daily bars are really drawn, green where a day was good and red where it was bad,
checked by counting them in the DOM and reading the screenshot's pixels."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import chromium
from tests.support.procs import ROOT, Running, isolated, wait_http
from tests.support.seeds import RED_DAYS

GREEN = (0x2E, 0x7D, 0x32)  # status_page.COLOURS["good"]
RED = (0xC6, 0x28, 0x28)  # status_page.COLOURS["bad"]
GREY = (0xC5, 0xCC, 0xD3)  # status_page.COLOURS["none"]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG (what
    Chromium writes), decoded with zlib and the five PNG row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind:  # 0 (None) leaves the row as it is
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                c = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + unfilter(kind, a, prev[i], c)) & 0xFF
        prev = bytes(line)
        rows.append(prev)
    return width, height, rows


def unfilter(kind: int, a: int, b: int, c: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def colour_at(png: tuple[int, int, list[bytes]], x: float, y: float) -> tuple[int, ...]:
    width, _, rows = png
    bpp = len(rows[0]) // width
    i = int(x) * bpp
    return tuple(rows[int(y)][i : i + 3])


def near(found: tuple[int, ...], wanted: tuple[int, int, int]) -> bool:
    # A little slack for colour management; the three colours are far apart.
    return all(abs(f - w) <= 12 for f, w in zip(found, wanted, strict=True))


def test_the_bars_are_drawn_green_and_red_in_a_real_browser(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        made = subprocess.run(
            [sys.executable, "-c", "from tests.support.seeds import seed_status_page as s; s()"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        slug = json.loads(made.stdout.strip().splitlines()[-1])["slug"]
        with Running(["web"], env) as web, chromium() as browser:
            wait_http(web.base_url + "/health/")
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            response = page.goto(f"{web.base_url}/status/{slug}/")
            assert response is not None and response.status == 200
            expect(page.get_by_role("heading", name="Acme status")).to_be_visible()
            expect(page.get_by_role("status")).to_have_text("Partial outage")

            bars = page.locator("svg.bars rect.bar")
            expect(bars).to_have_count(180)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            # Only the services' area: a smaller picture decodes faster in pure Python.
            area = page.locator("ul.status-items").bounding_box()
            assert area is not None
            shot = page.screenshot(path=str(tmp_path / "status.png"), clip=area)
            png = png_pixels(shot)

            def sample(item: int, ago: int) -> tuple[int, ...]:
                box = page.locator("svg.bars").nth(item).locator("rect.bar").nth(89 - ago)
                bounds = box.bounding_box()
                assert bounds is not None and bounds["width"] >= 2 and bounds["height"] >= 20
                x = bounds["x"] + bounds["width"] / 2 - area["x"]
                return colour_at(png, x, bounds["y"] + 10 - area["y"])

            for ago in (1, 2, 30, 60):
                assert near(sample(0, ago), GREEN), (ago, sample(0, ago))
            for ago in RED_DAYS:
                assert near(sample(1, ago), RED), (ago, sample(1, ago))
            for ago in (2, 12):
                assert near(sample(1, ago), GREEN), (ago, sample(1, ago))
            for ago in (0, 61, 89):
                assert near(sample(0, ago), GREY), (ago, sample(0, ago))
            # The browser drew them: the bars really are in the pixels, not only the DOM.
            strip = [sample(1, ago) for ago in range(90)]
            assert sum(near(p, GREEN) for p in strip) == 60 - len(RED_DAYS)
            assert sum(near(p, RED) for p in strip) == len(RED_DAYS)
