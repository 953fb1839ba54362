"""A request's ID (X-Request-ID) is on every log line written while it is answered."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from onwatch.logfilters import RequestId
from tests.support.fixtures import signed_in


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """django.request's lines, formatted and filtered as settings.LOGGING's console does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"]))
    handler.addFilter(RequestId())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


@pytest.mark.urls("tests.support.boom_urls")
def test_a_failed_requests_traceback_names_the_request(
    members: dict[str, Any], logged: io.StringIO
) -> None:
    """The ID the person sees (X-Request-ID, as Caddy's log shows it too) finds the
    traceback of their failed request."""
    client = signed_in(members["owner"])
    client.raise_request_exception = False
    answer = client.get("/boom/")
    assert answer.status_code == 500
    text = logged.getvalue()
    assert f"ERROR django.request [request {answer['X-Request-ID']}]: Internal Server Error" in text
    assert "RuntimeError: boom for the test" in text


def test_a_not_found_line_names_the_request(members: dict[str, Any], logged: io.StringIO) -> None:
    """Django writes it once the middleware has answered (and let go of the ID): the
    line still carries the ID the person saw."""
    answer = signed_in(members["owner"]).get("/no-such-page/")
    assert answer.status_code == 404
    rid = answer["X-Request-ID"]
    assert f"WARNING django.request [request {rid}]: Not Found: /no-such-page/" in logged.getvalue()


def test_a_line_outside_any_request_has_no_request_tag(logged: io.StringIO) -> None:
    logging.getLogger("django.request").warning("outside")
    assert re.search(r"WARNING django\.request: outside$", logged.getvalue().strip())
