"""The site's icon (web/views.py favicon): browsers ask for it by themselves, signed in or
not; without it every page left a failed request (404) in the browser's console."""

from __future__ import annotations

from typing import Any

from django.test import Client

from tests.support.fixtures import signed_in


def test_the_icon_answers_without_a_sign_in_and_every_page_names_it(
    db: None, members: dict[str, Any]
) -> None:
    icon = Client().get("/favicon.ico")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")
    sign_in = Client().get("/accounts/login/").content.decode()
    dashboard = signed_in(members["viewer"]).get("/").content.decode()
    for page in (sign_in, dashboard):
        assert '<link rel="icon" href="/favicon.ico" type="image/svg+xml">' in page
