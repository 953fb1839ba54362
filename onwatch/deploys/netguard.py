"""ip (iproute2) inside a pipeline step's network namespace: the only module that runs it.

slirp4netns keeps the step off this machine's loopback, but it makes the step's other
connections from this machine's own sockets: to this machine's other addresses (its LAN
address, a container bridge) they arrive as from this machine itself, and link-local
addresses (169.254.169.254, the cloud metadata service that hands out the machine's
credentials) answer too. Routes of type "prohibit" in the step's own namespace refuse
those at once (connect fails with "permission denied"), and the step cannot change them:
it has no capabilities there. Every other address, package registries included, goes out
through slirp4netns as before. The step's network is IPv4 only (slirp4netns without -6).

Only root can set them: the routes need a capability over the step's namespace that
onwatch keeps only when it runs as root (as a plain user it could join the namespace, but
loses its capabilities there when it starts `ip`). Otherwise steps run without them, and
the service page says so (applies()).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess

PROGRAM = "ip"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LINK_LOCAL = "169.254.0.0/16"
SLIRP_NETWORK = "10.0.2.0/24"  # slirp4netns's default --cidr, which slirp.py keeps
SECONDS = 10


class GuardError(Exception):
    """The routes could not be set; the message is for people."""


def missing() -> str | None:
    """None when the guard can be applied here (as root); else what to install."""
    if not as_root():
        return None
    for program, package in ((PROGRAM, "iproute2"), ("nsenter", "util-linux")):
        if shutil.which(program, path=PATH) is None:
            return f"install {package} (apt-get install {package})"
    return None


def applies() -> bool:
    """Whether steps are kept off this machine's other addresses and link-local ones."""
    return as_root() and missing() is None


def as_root() -> bool:
    return os.geteuid() == 0


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses but loopback, read now: they may have changed since
    the last step (DHCP, a new container bridge)."""
    said = subprocess.run(
        [PROGRAM, "-j", "-4", "addr", "show"], capture_output=True, text=True, env={"PATH": PATH}
    )
    if said.returncode != 0:
        raise GuardError(f"ip could not list this machine's addresses: {said.stderr.strip()}")
    found = {
        info["local"]
        for link in json.loads(said.stdout or "[]")
        for info in link.get("addr_info", [])
        if info.get("local") and not ipaddress.ip_address(info["local"]).is_loopback
    }
    return sorted(found)


def blocked() -> list[str]:
    """What a step may not reach, as networks: the link-local range and each address.
    One inside slirp4netns's own network (a VirtualBox guest's 10.0.2.15) is left out:
    there slirp4netns answers only for its own gateway and DNS server, which a route
    would take away."""
    slirp_net = ipaddress.ip_network(SLIRP_NETWORK)
    own = [a for a in machine_addresses() if ipaddress.ip_address(a) not in slirp_net]
    return [LINK_LOCAL, *(f"{a}/32" for a in own)]


def apply(pid: int) -> list[str]:
    """Refuse the blocked networks inside the network namespace of the sandbox whose pid 1
    is `pid`, before the step starts; nothing where applies() is false. Returns what it
    blocked."""
    if not applies():
        return []
    networks = blocked()
    # Opened here, while the sandbox's pid 1 is surely the one we mean.
    netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        said = subprocess.run(
            ["nsenter", f"--net=/proc/self/fd/{netns}", "--", PROGRAM, "-batch", "-"],
            input="".join(f"route add prohibit {n}\n" for n in networks),
            capture_output=True,
            text=True,
            env={"PATH": PATH},
            pass_fds=(netns,),
            timeout=SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise GuardError(
            f"ip did not set the step's routes within {SECONDS} s; the machine may be "
            "overloaded, run it again"
        ) from None
    finally:
        os.close(netns)
    if said.returncode != 0:
        raise GuardError(
            f"could not keep the step off this machine's addresses ({said.stderr.strip()}); "
            "check that ip and nsenter run here (ip -V, nsenter -V)"
        )
    return networks
