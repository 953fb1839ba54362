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
        "query_string": f"page=2&token={FILTERED}",
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


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("password=hunter2", f"password={FILTERED}"),
        ("pass%77ord=hunter2&page=2", f"pass%77ord={FILTERED}&page=2"),
        ([["password", "hunter2"]], [["password", FILTERED]]),
        ({"password": "hunter2"}, {"password": FILTERED}),
        ("https://shop.example/pay?token=hunter2", f"https://shop.example/pay?token={FILTERED}"),
        ("login failed: password=hunter2 (twice)", f"login failed: password={FILTERED} (twice)"),
        ("GET /x?a=1&api_key=hunter2#top", f"GET /x?a=1&api_key={FILTERED}#top"),
    ],
)
def test_secrets_in_query_strings_urls_and_messages_are_filtered(
    sent: object, kept: object
) -> None:
    assert scrub.scrubbed({"query_string": sent}) == {"query_string": kept}


@pytest.mark.parametrize("sent", ["x=a b", "1+1=2", "level=high and rising", "page=2&sort=-id"])
def test_text_with_other_equals_signs_stays_as_it_was(sent: str) -> None:
    assert scrub.scrubbed(sent) == sent


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ('    password = "hunter2"', '    password = "[Filtered]"'),
        ("login(user='ada', password='hunter2')", "login(user='ada', password='[Filtered]')"),
        ('{"api_key": "hunter2", "user": "ada"}', '{"api_key": "[Filtered]", "user": "ada"}'),
        ('token: str = "hunter2"', 'token: str = "[Filtered]"'),
        ('if password == "hunter2":', 'if password == "[Filtered]":'),
        ("const apiKey = 'hunter2';", "const apiKey = '[Filtered]';"),
        ("os.environ['API_KEY'] = 'hunter2'", "os.environ['API_KEY'] = '[Filtered]'"),
        ("password = hunter2", "password = [Filtered]"),
        # Code that only reads a secret shows no value: it stays readable.
        ("password = request.POST['password']", "password = request.POST['password']"),
        ("token = get_token()", "token = get_token()"),
        ("username = 'ada'", "username = 'ada'"),
    ],
)
def test_a_secret_in_a_line_of_code_is_filtered(line: str, kept: str) -> None:
    frame = {"pre_context": [line], "context_line": line, "post_context": [line, "x = 1"]}
    assert scrub.scrubbed(frame) == {
        "pre_context": [kept],
        "context_line": kept,
        "post_context": [kept, "x = 1"],
    }


def test_a_local_variables_value_is_scrubbed_as_code() -> None:
    frame = {"vars": {"login": "Login(user='ada', password='hunter2')", "n": "3"}}
    assert scrub.scrubbed(frame) == {
        "vars": {"login": "Login(user='ada', password='[Filtered]')", "n": "3"}
    }
    # Elsewhere text stays as written: only `name=value` is a secret there.
    assert scrub.scrubbed({"message": 'password = "is required"'}) == {
        "message": 'password = "is required"'
    }
