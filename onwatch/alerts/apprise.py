"""The one module that talks to Apprise: validating channel URLs and delivering."""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def send(
    url: str, title: str, body: str, notify_type: NotifyType = "info", public_only: bool = False
) -> None:
    """Deliver one notification; raise ChannelError with Apprise's own reason on failure.
    public_only: connect to public addresses only (a member's own channel)."""
    ap = apprise.Apprise()
    if not ap.add(url.strip()):
        raise ChannelError("Apprise does not understand this channel's URL")
    with _public_only(public_only) as refused:
        # Alert bodies are plain text, one fact a line: said so, Apprise turns them into
        # HTML for services that want it; unsaid, a mail showed them run together.
        result = ap.notify(
            title=title, body=body or title, notify_type=notify_type, body_format="text"
        )
    if refused:
        raise InsideNetwork(f"Not sent: {refused[0]} {INSIDE}")
    if not result:
        reasons = _reasons(result)
        reason = reasons[-1] if reasons else "the service refused it"
        raise ChannelError(f"Delivery failed: {reason}")


# --- a member's own channel reaches public addresses only ---------------------------------
#
# Any member, a viewer too, sets their own channel and sends it a test: were any address
# allowed, that would let them make onwatch request what only it can reach (the cloud
# metadata service at 169.254.169.254, an admin port on 127.0.0.1, a 10.x service). So an
# own channel's host is refused when saved if it is (or resolves to) such an address, and,
# since a name can resolve elsewhere by the time it is used (DNS rebinding) and some
# services take their server from a parameter (mailto's smtp=), every connection made
# while it is delivered is checked too: the address actually connected to, after
# resolution, whichever library of Apprise's makes it. The organization's channels, which
# only admins set, may go anywhere (a team's chat server on its own network).


class InsideNetwork(ChannelError):
    """A member's own channel led inside the network: trying again will not help."""


INSIDE = (
    "is inside the network (this machine, a private or a link-local address), and a "
    "member's own channel may only reach public addresses; an admin can add it as one of "
    "the organization's channels instead"
)
# The refused addresses of the delivery under way in this context; None when unguarded.
# Apprise hands its worker threads a copy of the caller's context, so they see it too.
_REFUSED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "onwatch_own_channel_refused", default=None
)
_hook_lock = threading.Lock()
_hooked = False


def is_public(host: str) -> bool:
    """Whether `host` is a public IP address; names and everything else are not."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global


# Where a socket sends: a connection, or a datagram with its own address (syslog over UDP
# never connects). Each event's arguments are (socket, address).
_SENDING = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _SENDING:
        return
    refused = _REFUSED.get()
    if refused is None:
        return
    address = args[1]
    if address is None:
        return  # sendmsg on a connected socket: its connect was checked
    host = str(address[0] if isinstance(address, tuple) and address else address)
    if not is_public(host):
        refused.append(host)
        raise PermissionError(errno.EACCES, f"onwatch refuses to connect to {host}")


def _install_hook() -> None:
    # An audit hook sees every connection the process makes, by any library, with the
    # address it really goes to; it cannot be removed, so it is added once, and does
    # nothing outside a guarded delivery.
    global _hooked
    with _hook_lock:
        if not _hooked:
            sys.addaudithook(_on_audit)
            _hooked = True


@contextmanager
def _public_only(guarded: bool) -> Iterator[list[str]]:
    refused: list[str] = []
    if not guarded:
        yield refused
        return
    _install_hook()
    token = _REFUSED.set(refused)
    try:
        yield refused
    finally:
        _REFUSED.reset(token)


def refuse_inside(url: str) -> None:
    """Raise ChannelError when the URL's host is, or resolves to, an address that is not
    public. A name that does not resolve (some services' "host" is a token) passes here;
    the delivery checks every connection it makes anyway."""
    host = str(getattr(_plugin(url), "host", "") or "").strip("[]")
    if not host:
        return
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return
    inside = sorted(a for a in found if not is_public(a))
    if inside:
        shown = host if inside == [host] else f"{host} ({inside[0]})"
        raise InsideNetwork(f"{shown} {INSIDE}")
