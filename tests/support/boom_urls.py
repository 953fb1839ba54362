"""onwatch's URLs plus one that fails, for tests of what a failure leaves in the log."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from onwatch.urls import urlpatterns as onwatch_urls


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom for the test")


urlpatterns = [path("boom/", boom), *onwatch_urls]
