"""ANSI colours in log lines become classed spans; everything else a terminal would act on
is dropped, and nothing in a line can become markup."""

from __future__ import annotations

from pathlib import Path

import pytest

from onwatch.core.ansi import stylesheet, to_html

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it

ESC = "\x1b"
STATIC = Path(__file__).resolve().parents[2] / "onwatch" / "static" / "onwatch" / "ansi.css"


def test_the_16_basic_and_bright_colours_and_bold_become_classes() -> None:
    line = f"{ESC}[31mred{ESC}[0m {ESC}[1;92mbold bright green{ESC}[22m still green{ESC}[m"
    assert to_html(line) == (
        '<span class="a-f1">red</span> '
        '<span class="a-f10 a-bold">bold bright green</span>'
        '<span class="a-f10"> still green</span>'
    )
    assert to_html(f"{ESC}[44;3;4mx{ESC}[49;23;24my") == ('<span class="a-b4 a-it a-ul">x</span>y')


def test_256_colours_and_truecolor_become_palette_classes() -> None:
    assert to_html(f"{ESC}[38;5;208morange") == '<span class="a-f208">orange</span>'
    assert to_html(f"{ESC}[48;5;22mbg") == '<span class="a-b22">bg</span>'
    # Truecolor: the nearest palette colour (the page's policy allows no inline style).
    assert to_html(f"{ESC}[38;2;255;0;0mred") == '<span class="a-f196">red</span>'
    assert to_html(f"{ESC}[38:2::0:95:255mitu") == '<span class="a-f27">itu</span>'
    # Out of range or cut short: no colour, and the text stays.
    assert to_html(f"{ESC}[38;5;300mx{ESC}[38;2;1mz") == "xz"


def test_text_is_escaped_before_colours_so_nothing_becomes_markup() -> None:
    line = f'<script>alert(1)</script>{ESC}[31m"><img src=x onerror=alert(1)>&amp;'
    html = to_html(line)
    assert "<script" not in html and "<img" not in html
    assert html == (
        "&lt;script&gt;alert(1)&lt;/script&gt;"
        '<span class="a-f1">&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;</span>'
    )
    # Parameters are digits only: a sequence cannot carry a class name of its own (this one
    # reads as a complete non-colour sequence, `ESC [ 31 " o`, and is dropped).
    assert to_html(f'{ESC}[31" onmouseover="x;1mhi') == "nmouseover=&quot;x;1mhi"


def test_other_escape_sequences_and_control_characters_are_dropped() -> None:
    title = f"{ESC}]0;window title{ESC}\\"
    link = f"{ESC}]8;;https://evil.example{ESC}\\here{ESC}]8;;{ESC}\\"
    assert to_html(f"a{title}b{ESC}[2Kc{ESC}[?25ld{ESC}(Be\x07\x00f") == "abcdef"
    assert to_html(link) == "here"
    assert to_html("tab\tstays") == "tab\tstays"
    # A progress bar redrawn with carriage returns shows what a terminal shows: the last.
    assert to_html("10%\r55%\r100%\r") == "100%"


def test_a_line_of_any_numbers_renders_without_failing() -> None:
    # A step prints what it likes: a parameter of 5,000 digits once ended the page in an
    # error and the live stream in a loop.
    assert to_html(f"{ESC}[{'9' * 5000}mtext{ESC}[0m") == "text"


def test_the_static_stylesheet_is_the_generated_one() -> None:
    css = stylesheet()
    assert STATIC.read_text() == css, "run: python -c 'from onwatch.core import ansi; ...'"
    assert ".a-f196 { color: #ff0000; }" in css and ".a-b232 { background-color: #080808; }" in css
