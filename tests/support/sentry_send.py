"""A plain script that reports through the real sentry-sdk, run in its own process:
`python -m tests.support.sentry_send DSN SCENARIO [--compression gzip|br|none] [--count N]`.

Scenarios: `crash` (an exception from an in-app frame, N times, each with another order
number and from another line), `secrets` (every kind of secret onwatch must scrub, with the
SDK's own scrubbing turned off), `in-text` (three events with `password=…` and the like in
query strings of each form, URLs, breadcrumbs, a message and an exception's value, the
SDK's scrubbing off too), `message` (N plain messages). Prints one line per event
id sent, then "flushed".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import sentry_sdk
from sentry_sdk.scrubber import EventScrubber

# Each secret kind with a value found nowhere else, so a byte search can prove it gone.
KEYED_SECRETS = {
    "password": "pw-3f9a1c",
    "db_secret": "sec-8b2d4e",
    "passwd": "pwd-7c1e9f",
    "api_key": "ak-2e8f0a",
    "apikey": "ak2-6d3b7c",
    "auth_code": "auth-5a9e2b",
    "credentials": "cred-1f7c3d",
    "mysql_pwd": "mysql-9d2a6e",
    "privatekey": "pk-4c8e1b",
    "private_key": "pk2-0b6d9f",
    "access_token": "tok-7e3a5c",
    "bearer": "bear-2c9f4a",
    "session_id": "sess-8a1d6b",
    "cookie_jar": "cook-3b7e0c",
}
CARD = "4111 1111 1111 1111"  # Luhn-valid (a test Visa number)
NOT_A_CARD = "4111 1111 1111 1112"  # fails Luhn: must stay
PEM_BODY = "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
AUTHORIZATION = "Bearer hdr-6f2b8d"
COOKIE = "sid=hdrcookie-1e5c9a"
QUERY_SECRET = "qs-4d8b2f"
USER_IP = "203.0.113.77"
LOCAL_SECRET = "local-9c3e7a"
# Written as a literal in checkout() too: the SDK sends that line of code with the frame.
CONTEXT_SECRET = "ctx-5b1e8d"
REPR_SECRET = "repr-2d7f4b"  # in a local variable's repr: Login(user='ada', password='…')
ALL = [*KEYED_SECRETS.values(), CARD, PEM_BODY, "hdr-6f2b8d", "hdrcookie-1e5c9a",
       QUERY_SECRET, USER_IP, LOCAL_SECRET, CONTEXT_SECRET, REPR_SECRET]  # fmt: skip
# `password=…` and the like inside text rather than under a key (scenario `in-text`).
IN_TEXT = {
    "query string": "qs1-5e8c2a",
    "query pairs": "qs2-9a4d1f",
    "query dict": "qs3-2f7b6e",
    "url": "url-8d3f1c",
    "breadcrumb url": "bcu-4b9e7a",
    "breadcrumb data": "bcd-7c2a5f",
    "message": "msg-1e6d9b",
    "exception value": "exc-3a8f4c",
}


@dataclass
class Login:
    user: str
    password: str


def checkout(order: int) -> None:
    password = LOCAL_SECRET  # a local variable the SDK sends with the frame  # noqa: F841
    db_password = "ctx-5b1e8d"  # a line of code the SDK sends with the frame  # noqa: F841
    login = Login("ada", REPR_SECRET)  # noqa: F841  (the SDK sends its repr)
    if order % 2:
        raise ValueError(f"order {order} could not be paid")  # another line than below
    raise ValueError(f"order {order} could not be paid")


def with_secrets(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    event["extra"] = {**KEYED_SECRETS, "note": f"key {PEM} card {CARD} not {NOT_A_CARD}"}
    event["request"] = {
        "method": "POST",
        "url": "https://shop.example/pay",
        "query_string": f"page=2&token={QUERY_SECRET}",
        "headers": {"Authorization": AUTHORIZATION, "Cookie": COOKIE, "Accept": "*/*"},
    }
    event["user"] = {"id": "u-42", "email": "ada@example.com", "ip_address": USER_IP}
    return event


sent: list[dict[str, Any]] = []  # by query_forms, which picks the next form by it


def query_forms(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Each event another form of query string: a string, pairs, a dict."""
    forms: list[Any] = [
        f"password={IN_TEXT['query string']}",
        [["password", IN_TEXT["query pairs"]]],
        {"password": IN_TEXT["query dict"]},
    ]
    event["request"] = {
        "method": "GET",
        "url": f"https://shop.example/orders?token={IN_TEXT['url']}",
        "query_string": forms[len(sent) % len(forms)],
    }
    sent.append(event)
    return event


def in_text() -> None:
    sentry_sdk.add_breadcrumb(
        category="http",
        message=f"GET https://api.example/stock?api_key={IN_TEXT['breadcrumb url']}",
        data={
            "url": f"https://api.example/stock?api_key={IN_TEXT['breadcrumb url']}",
            "body": f"user=ada&password={IN_TEXT['breadcrumb data']}",
        },
    )
    print(sentry_sdk.capture_message(f"login failed: password={IN_TEXT['message']}"), flush=True)
    sentry_sdk.flush(5)
    try:
        raise ConnectionError(
            f"could not fetch https://pay.example/charge?password={IN_TEXT['exception value']}"
        )
    except ConnectionError:
        print(sentry_sdk.capture_exception(), flush=True)
    sentry_sdk.flush(5)
    print(sentry_sdk.capture_message("a third form of query string"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("scenario", choices=["crash", "secrets", "message", "in-text"])
    parser.add_argument("--compression", default="gzip")
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    options: dict[str, Any] = {}
    if args.scenario in ("secrets", "in-text"):
        # The SDK's own scrubbing off: what reaches the database is onwatch's doing.
        options = {
            "send_default_pii": True,
            "event_scrubber": EventScrubber(denylist=[], send_default_pii=True),
            "before_send": with_secrets if args.scenario == "secrets" else query_forms,
        }
    sentry_sdk.init(
        args.dsn,
        release="shop@1.2.3",
        environment="production",
        include_local_variables=True,
        in_app_include=["tests"],
        default_integrations=False,
        _experiments={"transport_compression_algo": args.compression},
        **options,
    )
    if args.scenario == "in-text":
        in_text()
    for n in range(args.count if args.scenario != "in-text" else 0):
        if args.scenario == "message":
            print(sentry_sdk.capture_message(f"disk {n} is full"), flush=True)
            continue
        try:
            checkout(n)
        except ValueError:
            print(sentry_sdk.capture_exception(), flush=True)
        sentry_sdk.flush(5)  # one at a time: the server's answers decide what is sent next
    sentry_sdk.flush(10)
    print("flushed", flush=True)


if __name__ == "__main__":
    main()
