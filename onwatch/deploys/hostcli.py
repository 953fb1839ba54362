"""`onwatch hosts add|list|key|check|forget-key|remove`: registered by deploys/cli.py."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare

if TYPE_CHECKING:
    from onwatch.core.models import Organization
    from onwatch.deploys.hosts import Finding
    from onwatch.deploys.models import Host

ORG_HELP = "the organization's name (needed when there are several)"
# A host's fields kept as they are when only whether it may use root changes.
HOST_FIELDS = ("provider", "monthly_cost", "currency", "allow_sudo", "caddy_https")


def register(add: AddCommand) -> None:
    group = add("hosts", lambda a: 0, "This machine and the SSH hosts services run on.")
    sub = group.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    adding = add("add", cmd_add, "Add an SSH host (user@host[:port]); pins its host key.", sub)
    adding.add_argument("address", help="user@host or user@host:port")
    # Not args.port: that is onwatch's own --port (ONWATCH_PORT) where a command takes it.
    adding.add_argument("--port", dest="ssh_port", type=int, help="the SSH port, when not 22")
    adding.add_argument("--provider", default="", help="own server, a VPS provider or a cloud")
    adding.add_argument("--monthly-cost", help="what it costs a month, e.g. 12.50EUR")
    adding.add_argument(
        "--prepare", action="store_true", help="install what onwatch can once it signs in"
    )
    adding.add_argument(
        "--allow-sudo", action="store_true", help="the deploy user may be root (on purpose)"
    )
    adding.add_argument("--http-port", type=int, default=80, help="Caddy's HTTP port there")
    adding.add_argument("--https-port", type=int, default=443, help="Caddy's HTTPS port there")
    adding.add_argument(
        "--health-port", type=int, default=2020, help="Caddy's loopback port for health checks"
    )
    adding.add_argument(
        "--no-https", dest="https", action="store_false", help="plain HTTP only (no certificates)"
    )
    listing = add("list", cmd_list, "List the hosts and whether each is ready.", sub)
    key = add("key", cmd_key, "Print onwatch's public key for the hosts' authorized_keys.", sub)
    check = add("check", cmd_check, "Check a host now: one line per thing deploys need.", sub)
    check.add_argument("name", help="the host's name as `hosts list` shows it")
    check.add_argument("--prepare", action="store_true", help="install what onwatch can first")
    check.add_argument(
        "--allow-sudo",
        action="store_true",
        help="the deploy user may be root (on purpose; as the host's page allows it)",
    )
    forget = add("forget-key", cmd_forget_key, "Forget a host's pinned key (reinstalled).", sub)
    forget.add_argument("name", help="the host's name as `hosts list` shows it")
    remove = add("remove", cmd_remove, "Remove an SSH host (nothing on it is touched).", sub)
    remove.add_argument("name", help="the host's name as `hosts list` shows it")
    for parser in (adding, listing, key, check, forget, remove):
        parser.add_argument("--org", help=ORG_HELP)


def _org(args: argparse.Namespace) -> Organization:
    from onwatch.core.commands import organization

    return organization(args.org)


def find_host(org: Organization, name: str) -> Host:
    from onwatch.deploys import services
    from onwatch.deploys.models import Host

    services.this_machine(org)
    found = Host.objects.filter(org=org, name=name).first()
    if found is None:
        names = ", ".join(Host.objects.filter(org=org).values_list("name", flat=True))
        fail(f"there is no host {name!r} (there are: {names})")
    assert found is not None
    return found


def cmd_add(args: argparse.Namespace) -> int:
    prepare()
    from pydantic import ValidationError

    from onwatch.core import ssh
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    org = _org(args)
    try:
        cost, currency = services.parse_cost(args.monthly_cost) if args.monthly_cost else (None, "")
        fields = services.HostFields(
            address=args.address,
            port=args.ssh_port,
            provider=args.provider,
            monthly_cost=cost,
            currency=currency,
            allow_sudo=args.allow_sudo,
            caddy_https=args.https,
            http_port=args.http_port,
            https_port=args.https_port,
            health_port=args.health_port,
        )
        host = services.add_host(org, fields, CLI)
    except ValidationError as e:
        first = e.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    except services.Refusal as e:
        fail(str(e))
    print(f"onwatch: added {host.name} (host key {', '.join(ssh.fingerprints(host.known_hosts))})")
    return first_check(host, args.prepare)


def first_check(host: Host, prepare: bool) -> int:
    """Check (and prepare) the host at once when onwatch's key is already on it; else say
    where the key goes. 0 when it is ready; 1 when it is added but not ready (the last
    line says what is missing and what to do): a script that adds a host and then
    deploys to it must not read "added" as "ready"."""
    from onwatch.deploys import hostchecks, hosts, services

    try:
        found = hostchecks.check(host, prepare=prepare)
    except hosts.KeyRefused:
        print(f"Put this line in {host.user}'s ~/.ssh/authorized_keys on the host:")
        print(services.host_key(host.org).public_key)
        print(f"then run: onwatch hosts check {host.name} --prepare")
        return not_ready(host, "onwatch's key is not on it yet (above: where it goes)")
    except hosts.HostError as e:
        return not_ready(host, f"it could not be checked ({e})")
    print_check(host, found)
    missing = [f.what for f in found if not f.ok]
    if not missing:
        return 0
    return not_ready(
        host,
        f"{len(missing)} of the {len(found)} things a deploy needs are missing "
        "(the lines marked missing above)",
    )


def not_ready(host: Host, why: str) -> int:
    print(
        f"onwatch: {host.name} is added but not ready for deploys: {why}; fix it, then run "
        f"onwatch hosts check {host.name} --prepare",
        file=sys.stderr,
    )
    return 1


def cmd_list(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.deploys import services
    from onwatch.deploys.models import Host

    org = _org(args)
    services.this_machine(org)
    for h in Host.objects.filter(org=org):
        ready = {None: "not checked yet", True: "ready", False: "not ready"}[h.ready]
        print(f"{h.name}\t{ready}\t{h.provider or '-'}\t{h.cost_text or '-'}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.deploys import services

    print(services.host_key(_org(args)).public_key)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """One line per thing; 0 when the host is ready, 1 when something is missing, 2 when
    it could not be reached or signed in to."""
    prepare()
    from onwatch.deploys import hostchecks, hosts

    host = find_host(_org(args), args.name)
    if args.allow_sudo:
        allow_root(host)
    try:
        found = hostchecks.check(host, prepare=args.prepare)
    except hosts.HostError as e:
        fail(str(e))
    print_check(host, found)
    return 0 if all(f.ok for f in found) else 1


def print_check(host: Host, found: list[Finding]) -> None:
    """One line per thing a deploy needs, then the host's clock (a warning beyond 2 s:
    deploys still go, its logs' times are off)."""
    from onwatch.deploys import hostchecks

    for f in found:
        print(f"{'ok' if f.ok else 'missing'}: {f.line}")
    if clock := hostchecks.clock_line(host):
        print(clock)


def allow_root(host: Host) -> None:
    """Added without --allow-sudo, a host signed in to as root had no way from the command
    line to allow it; its check said only "on the host's page"."""
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    kept = {name: getattr(host, name) for name in (*HOST_FIELDS, *services.HOST_PORTS)}
    fields = services.HostFields(address=host.name, **(kept | {"allow_sudo": True}))
    if services.change_host(host, fields, CLI):
        print(f"onwatch: {host.name} may now sign in as root or use sudo (on purpose)")


def cmd_forget_key(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    host = find_host(_org(args), args.name)
    services.forget_host_key(host, CLI)
    print(f"onwatch: forgot the host key of {host.name}; the next check pins the one it shows")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.deploys import services

    host = find_host(_org(args), args.name)
    try:
        services.remove_host(host, CLI)
    except services.Refusal as e:
        fail(str(e))
    print(f"onwatch: removed {host.name}")
    return 0
