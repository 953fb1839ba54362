"""Full addresses of onwatch's own pages, for text read outside the browser (alerts)."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse


def absolute(path: str) -> str:
    """`path` on the address people use (ONWATCH_BASE_URL): a link that works in a mail."""
    origin: str = settings.SITE.origin
    return f"{origin}{path}"


def page(name: str, *args: object) -> str:
    return absolute(reverse(name, args=args))
