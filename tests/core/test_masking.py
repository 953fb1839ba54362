"""Secrets hidden in every form a program prints them in, however the output is cut up."""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
from urllib.parse import quote, quote_plus

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from onwatch.core.masking import Masker, forms

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

TOKEN = "tok_9fQz?>Lw7é€xY2~"  # base64 of it has + and /, its UTF-8 multibyte characters
PASSWORD = "p@ss w/rd&?=é!'()*~"


def stream(masker: Masker, data: bytes, cuts: list[int]) -> str:
    """What a pipeline shows of `data` read in pieces ending at `cuts`."""
    bounds = [0, *sorted(cuts), len(data)]
    shown = [masker.feed(data[a:b]) for a, b in itertools.pairwise(bounds)]
    return "".join(shown) + masker.flush()


def pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_a_secret_is_replaced_by_its_name() -> None:
    masker = Masker({"API_TOKEN": TOKEN})
    assert masker.mask(f"curl -H 'Authorization: Bearer {TOKEN}'") == (
        "curl -H 'Authorization: Bearer [secret API_TOKEN]'"
    )


def test_a_key_printed_line_by_line_with_crlf_and_indented_shows_no_line_of_it() -> None:
    key = pem_key()
    printed = "".join(f"    {line}\r\n" for line in key.splitlines())
    masker = Masker({"DEPLOY_KEY": key})
    shown = "".join(masker.feed(line.encode()) for line in printed.splitlines(True))
    shown += masker.flush()
    assert shown.count("[secret DEPLOY_KEY]") == len(key.splitlines())
    assert re.fullmatch(r"(    \[secret DEPLOY_KEY\]\r\n)+", shown)


def test_a_short_line_of_a_multiline_secret_is_hidden_with_its_neighbour() -> None:
    value = "-----BEGIN KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\nWQ\n-----END KEY-----\n"
    masker = Masker({"KEY": value})
    for printed in (value, value.replace("\n", "\r\n")):
        shown = masker.mask(printed)
        assert "WQ" not in shown and "QUJD" not in shown, shown


def test_base64_of_a_secret_is_hidden_alone_and_inside_a_longer_text_at_every_offset() -> None:
    value = TOKEN.encode()
    assert base64.b64encode(value) != base64.urlsafe_b64encode(value)
    masker = Masker({"API_TOKEN": TOKEN})
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for before in (b"", b"a", b"ab", b"abc"):
            for after in (b"", b"\n", b"xy", b"xyz"):
                encoded = encode(before + value + after).decode()
                for text in (encoded, encoded.rstrip("=")):
                    shown = masker.mask(f"data: {text}.")
                    # Only characters that carry bits of the bytes around it may remain
                    # (one of them may carry the value's last bits too).
                    kept = shown.removeprefix("data: ").removesuffix(".").split("[secret")
                    assert len(kept) == 2, shown
                    assert len(kept[0]) <= -(-8 * len(before) // 6), shown
                    kept_after = kept[1].removeprefix(" API_TOKEN]").rstrip("=")
                    assert len(kept_after) <= -(-8 * len(after) // 6) + 1, shown


def test_a_long_value_in_base64_broken_into_lines_shows_no_line_of_it() -> None:
    key = pem_key()
    encoded = base64.b64encode(key.encode()).decode()
    masker = Masker({"DEPLOY_KEY": key})
    for width in (76, 64):
        lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
        shown = masker.mask("\n".join(lines) + "\n")
        assert shown.splitlines() == ["[secret DEPLOY_KEY]"] * len(lines)


def test_url_encoded_forms_are_hidden_whole() -> None:
    masker = Masker({"DB_PASSWORD": PASSWORD})
    encoded = [
        quote(PASSWORD, safe=""),
        quote(PASSWORD),
        quote_plus(PASSWORD),
        quote(PASSWORD, safe="!'()*"),
        quote(PASSWORD, safe="").lower(),
    ]
    assert len(set(encoded)) == 5
    for form in encoded:
        assert masker.mask(f"postgres://app:{form}@db/app") == (
            "postgres://app:[secret DB_PASSWORD]@db/app"
        )


def test_a_json_escaped_value_is_hidden_whole() -> None:
    value = 'say "hi"\n\tthen é'
    masker = Masker({"GREETING": value})
    for ascii_only in (True, False):
        printed = json.dumps({"greeting": value}, ensure_ascii=ascii_only)
        assert masker.mask(printed) == '{"greeting": "[secret GREETING]"}'


def test_a_cut_anywhere_inside_any_form_still_hides_it() -> None:
    """Every form of a value with multibyte characters, cut at every byte: the pipe may
    split a UTF-8 character too, which must not become U+FFFD."""
    secrets = {"API_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD}
    for name, value in secrets.items():
        for form in forms(value):
            data = f"before {form} after\n".encode()
            expected = Masker(secrets).mask(data.decode())
            assert f"[secret {name}]" in expected and form not in expected
            for cut in range(len(data) + 1):
                assert stream(Masker(secrets), data, [cut]) == expected, (form, cut)


def test_a_long_log_read_in_pieces_of_any_size_shows_no_part_of_a_key() -> None:
    key = pem_key()
    secrets = {"DEPLOY_KEY": key, "API_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD}
    printed = [key, base64.b64encode(key.encode()).decode(), json.dumps(key), quote(PASSWORD)]
    log = "".join(f"step {i}: {printed[i % 4]} done\n" for i in range(40)).encode()
    expected = Masker(secrets).mask(log.decode())
    for seed in range(20):
        rng = random.Random(seed)
        cuts = [rng.randrange(len(log)) for _ in range(rng.randrange(1, 200))]
        assert stream(Masker(secrets), log, cuts) == expected, seed
    body = [line for line in key.splitlines() if "-----" not in line]
    assert not [line for line in body if line in expected]
    assert expected.count("[secret DEPLOY_KEY]") >= 30


def test_output_is_held_back_only_while_it_may_be_the_start_of_a_secret() -> None:
    masker = Masker({"TOKEN": "hunter2hunter2"})
    assert masker.feed(b"Building wheel\n") == "Building wheel\n"
    assert masker.feed(b"token: hun") == "token: "
    assert masker.feed(b"gry\n") == "hungry\n"
    assert masker.feed(b"caf\xc3") == "caf"
    assert masker.feed(b"\xa9 hunter2") == "\u00e9 "
    assert masker.flush() == "hunter2"


def test_a_secret_that_starts_like_a_shorter_one_is_shown_as_the_longer() -> None:
    masker = Masker({"SHORT": "password", "LONG": "password123"})
    shown = [masker.feed(piece) for piece in (b"pass", b"word", b"123\n")]
    assert "".join(shown) + masker.flush() == "[secret LONG]\n"


def test_overlapping_secrets_are_both_hidden() -> None:
    masker = Masker({"A": "abcdef12", "B": "ef12ghij"})
    assert masker.mask("xxabcdef12ghijyy") == "xx[secret A]yy"


def test_values_too_short_to_hide_are_named_and_left_alone() -> None:
    masker = Masker({"PIN": "123", "EMPTY": "", "PADDED": " ab \n", "TOKEN": "long-enough"})
    assert masker.unmasked() == ["PIN", "PADDED"]
    assert masker.mask("pin 123, token long-enough") == "pin 123, token [secret TOKEN]"
    nothing_to_hide = Masker({"PIN": "123"})
    assert nothing_to_hide.feed(b"pin 12") == "pin 12"  # held back for nothing


def test_an_invalid_byte_is_shown_as_a_replacement_character_not_dropped() -> None:
    masker = Masker({"TOKEN": "hunter2hunter2"})
    assert masker.feed(b"a\xffb") + masker.flush() == "a\ufffdb"
    assert masker.feed(b"end\xe2\x82") + masker.flush() == "end\ufffd"


ALPHABET = "ab1+/=% é€\n"


def without_labels(text: str) -> list[str]:
    return re.split(r"\[secret [A-C]\]", text)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_any_stream_cut_anywhere_hides_every_form_and_matches_masking_it_whole(
    data: st.DataObject,
) -> None:
    values = data.draw(st.lists(st.text(ALPHABET, min_size=4, max_size=12), max_size=3))
    secrets = dict(zip("ABC", values, strict=False))
    pieces = [st.text(ALPHABET, max_size=8)]
    every_form = sorted(form for value in values for form in forms(value))
    if every_form:
        pieces.append(st.sampled_from(every_form))
    text = "".join(data.draw(st.lists(st.one_of(pieces), max_size=8)))
    encoded = text.encode()
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=6))
    shown = stream(Masker(secrets), encoded, cuts)
    whole = Masker(secrets).mask(text)
    # The same characters are hidden; labels may differ where hidden secrets overlap.
    same = re.compile(r"(?:\[secret [A-C]\])+")
    assert same.sub("[secret]", shown) == same.sub("[secret]", whole)
    for part in without_labels(shown):
        assert not [form for form in every_form if form in part]
