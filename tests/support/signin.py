"""A wrong password sent to a real onwatch as one raw HTTP request with headers of the
test's choosing (as another program on this machine, or Caddy, would send it)."""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode

CSRF = re.compile(r"csrftoken=([A-Za-z0-9]+)")


def wrong_password(port: int, email: str, **headers: str) -> int:
    """POST the sign-in form with a wrong password; its status (200: the form again)."""
    form_page = _ask(port, "GET", "/accounts/login/", b"", headers)
    found = CSRF.search(form_page.getheader("Set-Cookie") or "")
    assert found, form_page.getheaders()
    body = urlencode(
        {"csrfmiddlewaretoken": found[1], "login": email, "password": "not the password"}
    ).encode()
    sent = {
        **headers,
        "Cookie": f"csrftoken={found[1]}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return _ask(port, "POST", "/accounts/login/", body, sent).status


def _ask(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **headers})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer
