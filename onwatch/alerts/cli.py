"""`onwatch notify test`: a test notification to alert channels, delivered at once."""

from __future__ import annotations

import argparse

from onwatch.core.commands import AddCommand
from onwatch.startup import fail, prepare


def register(add: AddCommand) -> None:
    notify = add("notify", lambda a: 0, "Alert channels.")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = add("test", cmd_notify_test, "Send a test notification to channels.", notify_sub)
    test.add_argument("--channel", help="a channel's name or number (default: all)")


def cmd_notify_test(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.alerts.models import Channel, DeliveryState
    from onwatch.alerts.services import send_test
    from onwatch.core.audit import CLI
    from onwatch.core.jobs import run_pending

    channels = Channel.objects.select_related("org")
    if args.channel:
        key = args.channel
        channels = channels.filter(pk=int(key)) if key.isdigit() else channels.filter(name=key)
    chosen = list(channels)
    if not chosen and args.channel:
        fail(f"there is no channel {args.channel!r}; see the names under Alert channels")
    if not chosen:
        fail("there are no channels yet; add one in the web console under Alert channels")
    sent = []
    for ch in chosen:
        sent.append(send_test(ch, CLI))
    # Delivered right here rather than by the worker, so the answer is immediate; the rows
    # are the same durable deliveries the worker makes, so a failed one is still retried.
    run_pending(kinds=["alerts.deliver"])
    failed = 0
    for d in sent:
        d.refresh_from_db()
        if d.state == DeliveryState.DELIVERED:
            print(f"{d.channel_name}: delivered")
            continue
        failed += 1
        retry = " (the worker will try again)" if d.state == DeliveryState.RETRYING else ""
        print(f"{d.channel_name}: {d.state}: {d.error}{retry}")
    return 1 if failed else 0
