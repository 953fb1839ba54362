"""The one module that talks to Apprise: validating channel URLs and delivering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from onwatch.core.lazy import lazy_module
from onwatch.core.network import is_loopback

# Apprise loads ~150 service plugins (about half a second); only processes that validate or
# deliver pay for it, not every web, scheduler and prober start.
apprise = lazy_module("apprise")


class ChannelError(Exception):
    """A channel URL is not usable, or a delivery did not go through. For people."""


def _plugin(url: str) -> Any:
    plugin = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
    if plugin is None:
        raise ChannelError(
            "Apprise does not understand this URL; see its wiki for the form each service takes"
        )
    return plugin


# Apprise's generic web hooks over plain HTTP; jsons://, xmls:// and forms:// use HTTPS.
PLAIN_WEBHOOKS = frozenset({"json", "xml", "form"})


def crosses_network_unencrypted(service: str, location: str) -> bool:
    """A stored channel from before plain-HTTP web hooks were refused, going elsewhere."""
    host = urlsplit(f"//{location}").hostname or ""
    return service in PLAIN_WEBHOOKS and not is_loopback(host)


def service_of(url: str) -> str:
    """Check the URL is one Apprise understands and name its service (mailto, json, ...).
    A plain-HTTP web hook is refused unless it stays on this machine."""
    plugin = _plugin(url)
    scheme = url.strip().split("://", 1)[0].lower()
    host = str(getattr(plugin, "host", "") or "")
    if scheme in PLAIN_WEBHOOKS and not is_loopback(host):
        raise ChannelError(
            f"{scheme}:// would send alerts to {host} across the network unencrypted; "
            f"use {scheme}s:// (HTTPS)"
        )
    return scheme


@dataclass(frozen=True)
class Summary:
    """What may be shown of a channel URL: never the URL itself, which holds tokens."""

    service: str
    location: str


def summarize(url: str) -> Summary:
    """The service and, where Apprise itself shows it unmasked, the host and port."""
    plugin = _plugin(url)
    # Apprise's privacy URL hides passwords and tokens; for services whose "host" is a
    # token (Slack, Discord, ...) it masks the host too, and then we show no host at all.
    shown = urlsplit(plugin.url(privacy=True))
    host = (shown.hostname or "").lower()
    location = ""
    if host and host == str(getattr(plugin, "host", "") or "").lower():
        location = f"{host}:{shown.port}" if shown.port else host
    return Summary(service=service_of(url), location=location)


def _reasons(result: Any) -> list[str]:
    # Apprise keeps each call's own log lines on its result, so deliveries running at the
    # same time in other threads cannot mix their reasons into ours.
    return [
        entry.message
        for service in result.results
        for entry in service.logs()
        if entry.level in ("WARNING", "ERROR", "CRITICAL")
    ]


# Apprise's notification types: services colour, sort or sound them by it (a failure is
# red in chat, a warning yellow), so an outage must not go out as plain information.
NotifyType = Literal["info", "success", "warning", "failure"]
NOTIFY_TYPES: tuple[NotifyType, ...] = ("info", "success", "warning", "failure")


def send(url: str, title: str, body: str, notify_type: NotifyType = "info") -> None:
    """Deliver one notification; raise ChannelError with Apprise's own reason on failure."""
    ap = apprise.Apprise()
    if not ap.add(url.strip()):
        raise ChannelError("Apprise does not understand this channel's URL")
    # Alert bodies are plain text, one fact a line: said so, Apprise turns them into HTML
    # for services that want it; unsaid, a mail showed them run together on one line.
    result = ap.notify(title=title, body=body or title, notify_type=notify_type, body_format="text")
    if not result:
        reasons = _reasons(result)
        reason = reasons[-1] if reasons else "the service refused it"
        raise ChannelError(f"Delivery failed: {reason}")
