"""The one module that talks to Apprise: validating channel URLs and delivering."""

from __future__ import annotations

import logging

import apprise


class ChannelError(Exception):
    """A channel URL is not usable, or a delivery did not go through. For people."""


def service_of(url: str) -> str:
    """Check the URL is one Apprise understands and name its service (mailto, json, ...)."""
    plugin = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
    if plugin is None:
        raise ChannelError(
            "Apprise does not understand this URL; see its wiki for the form each service takes"
        )
    scheme = url.split("://", 1)[0].lower()
    return scheme


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def send(url: str, title: str, body: str) -> None:
    """Deliver one notification; raise ChannelError with Apprise's own reason on failure."""
    ap = apprise.Apprise()
    if not ap.add(url.strip()):
        raise ChannelError("Apprise does not understand this channel's URL")
    capture = _Capture()
    logger = logging.getLogger("apprise")
    logger.addHandler(capture)
    try:
        ok = ap.notify(title=title, body=body or title)
    finally:
        logger.removeHandler(capture)
    if not ok:
        reason = capture.messages[-1] if capture.messages else "the service refused it"
        raise ChannelError(f"Delivery failed: {reason}")
