"""Scrubbing's shortcuts (onwatch/errors/scrub.py `quiet` and its caches) skip only what
cannot hold a secret: each kind of secret a shortcut could let by is still filtered."""

from __future__ import annotations

import pytest

from onwatch.errors import scrub
from onwatch.errors.scrub import FILTERED

pytestmark = pytest.mark.once

CARD = "4111111111111111"  # passes Luhn


@pytest.mark.parametrize(
    "written",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111 1111-1111 1111", CARD],
)
def test_a_card_number_split_by_spaces_or_dashes_is_filtered(written: str) -> None:
    assert scrub.scrubbed({"message": f"paid with {written} today"}) == {
        "message": f"paid with {FILTERED} today"
    }


@pytest.mark.parametrize("key", ["PASSWORD", "PassWord", "X-Auth-Token", "Set-COOKIE"])
def test_a_key_name_in_another_case_is_filtered(key: str) -> None:
    # The first time fills the cache of key names, the second reads it.
    for _ in range(2):
        assert scrub.scrubbed({key: "hunter2"}) == {key: FILTERED}


def test_a_secret_in_a_nested_list_is_filtered() -> None:
    sent = {"extra": {"calls": [[["login", ["password=hunter2"]]], [{"token": "hunter2"}]]}}
    assert scrub.scrubbed(sent) == {
        "extra": {"calls": [[["login", [f"password={FILTERED}"]]], [{"token": FILTERED}]]}
    }


def test_a_string_cached_as_text_is_still_scrubbed_as_code() -> None:
    line = 'password = "hunter2"'
    assert scrub.scrubbed({"message": line}) == {"message": line}  # text: no name=value
    assert scrub.scrubbed({"context_line": line}) == {"context_line": 'password = "[Filtered]"'}


def test_letters_a_case_blind_search_takes_for_ascii_ones_are_not_skipped() -> None:
    # The Kelvin sign is a K to a case-blind search, not to lower().
    name = "private_\u212aey"
    assert scrub.scrubbed({"message": f"{name}=hunter2"}) == {"message": f"{name}={FILTERED}"}


def test_a_percent_encoded_name_is_decoded_before_it_is_judged() -> None:
    assert scrub.scrubbed({"url": "/x?p%61ssword=hunter2"}) == {"url": f"/x?p%61ssword={FILTERED}"}


def test_long_strings_past_the_cache_are_scrubbed_too() -> None:
    padding = "x" * 500
    sent = {
        "message": f"{padding} {CARD} {padding}",
        "note": f"{padding}\n-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----",
        "context_line": f"{padding}; api_key = 'hunter2'",
    }
    assert scrub.scrubbed(sent) == {
        "message": f"{padding} {FILTERED} {padding}",
        "note": f"{padding}\n{FILTERED}",
        "context_line": f"{padding}; api_key = '[Filtered]'",
    }


def test_short_strings_are_kept_but_still_made_storable() -> None:
    assert scrub.scrubbed({"a": "ok", "b": "a\x00b", "c": "\ud800"}) == {
        "a": "ok",
        "b": "ab",
        "c": "?",
    }
