"""Where traffic goes. Plain HTTP is acceptable only when it never leaves this machine."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (bracketed or not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Headers a proxy adds on the way in; a program on this machine calling onwatch directly
# sends none of them.
FORWARDING = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def through_unnamed_proxy(meta: dict[str, object], trusted: str, domain: str) -> bool:
    """A request a proxy onwatch was not told about passed on: it arrives from loopback
    with forwarding headers while no proxy is named (ONWATCH_TRUSTED_PROXIES) and onwatch's
    own Caddy is not in front (its requests are told apart by their token)."""
    if domain or trusted.strip():
        return False
    return is_loopback(str(meta.get("REMOTE_ADDR", ""))) and any(h in meta for h in FORWARDING)
