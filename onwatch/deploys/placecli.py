"""`onwatch services hosts SERVICE [HOST…]`: which hosts a service runs on, in the order
its deploys go through them, and what serves on each; a refusal is one line, exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare


def register(add: AddCommand, services_sub: Any) -> None:
    hosts = add(
        "hosts",
        cmd_services_hosts,
        "Set the hosts a service runs on, in deploy order ('this machine' alone: only here); "
        "without hosts, says where it runs and what serves on each.",
        services_sub,
    )
    hosts.add_argument("service", help="the service's name")
    hosts.add_argument(
        "hosts", nargs="*", metavar="HOST", help="e.g. 'this machine' deploy@10.0.0.7"
    )
    hosts.add_argument("--org", help="the organization's name (needed when there are several)")


def cmd_services_hosts(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.commands import organization
    from onwatch.deploys import releases, services
    from onwatch.deploys.cli import find_service

    org = organization(args.org)
    service = find_service(org, args.service)
    if args.hosts:
        try:
            chosen = services.hosts_named(org, args.hosts)
            left = services.set_service_hosts(service, chosen, CLI, look=True)
        except services.Refusal as e:
            fail(str(e))
        for line in left:
            print(f"onwatch: warning: {line}", file=sys.stderr)
    for where in releases.where_it_runs(service, look=True):
        print(f"{where.host}\t{where.serving}")
    if args.hosts:
        order = ", then ".join(args.hosts) if len(args.hosts) > 1 else args.hosts[0]
        print(f"onwatch: {service.name} runs on {order}; its next deploy goes to each in turn")
    return 0
