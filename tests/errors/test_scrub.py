"""Scrubbing (onwatch/errors/scrub.py): what is filtered, what stays."""

from __future__ import annotations

import pytest

from onwatch.errors import scrub
from onwatch.errors.scrub import FILTERED

pytestmark = pytest.mark.once


@pytest.mark.parametrize(
    "key",
    ["password", "DB_SECRET", "passwd", "api_key", "X-ApiKey", "Authorization", "credentials",
     "MYSQL_PWD", "privatekey", "private_key", "csrf_token", "bearer", "sessionid", "Cookie"],
)  # fmt: skip
def test_values_under_secret_keys_are_filtered(key: str) -> None:
    assert scrub.scrubbed({key: "v", "name": "kept"}) == {key: FILTERED, "name": "kept"}


def test_header_pairs_query_strings_cards_and_pem_keys() -> None:
    event = {
        "headers": [["Cookie", "a=b"], ["Accept", "*/*"]],
        "query_string": "page=2&token=abc",
        "message": "card 4111-1111-1111-1111 and 1234 5678 9012 3456",
        "note": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY----- done",
    }
    assert scrub.scrubbed(event) == {
        "headers": [["Cookie", FILTERED], ["Accept", "*/*"]],
        "query_string": "page=2&token=%5BFiltered%5D",
        "message": f"card {FILTERED} and 1234 5678 9012 3456",  # the second fails Luhn
        "note": f"{FILTERED} done",
    }


def test_deep_data_is_cut_not_crashed_on() -> None:
    deep: object = "x"
    for _ in range(1000):
        deep = [deep]
    assert FILTERED in str(scrub.scrubbed(deep))


def test_ip_addresses_are_kept_or_truncated() -> None:
    event = {
        "user": {"ip_address": "{{auto}}"},
        "request": {"env": {"REMOTE_ADDR": "2001:db8:1:2::7"}},
    }
    scrub.addresses(event, "198.51.100.23", keep=False)
    assert event == {
        "user": {"ip_address": "198.51.100.0"},
        "request": {"env": {"REMOTE_ADDR": "2001:db8:1::"}},
    }
    kept = {"user": {"ip_address": "198.51.100.23"}}
    scrub.addresses(kept, "", keep=True)
    assert kept == {"user": {"ip_address": "198.51.100.23"}}


def test_what_databases_refuse_is_taken_out() -> None:
    assert scrub.scrubbed({"a\x00b": "c\x00d", "e": "\ud800f"}) == {"ab": "cd", "e": "?f"}
