"""Checking a host (and preparing it: installing what onwatch can), the result stored on the
host, and one alert when a host stops being ready (one more when it is ready again). The
job, the page and `onwatch hosts check` all come here."""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib.metadata import version

from django.urls import reverse

from onwatch.alerts.services import raise_alert
from onwatch.core import ssh
from onwatch.deploys import hosts, procman, services, switch, systemd
from onwatch.deploys.models import Host


def target(host: Host) -> hosts.Target:
    if host.local:
        return hosts.Target(host.name)
    if not host.known_hosts.strip():
        # Forgotten on purpose (a reinstalled host): pinned again on this first use.
        try:
            known = ssh.scan_host_keys(host.address, host.port, what="host")
        except ssh.SshError as e:
            raise hosts.HostError(str(e)) from None
        services.pin_host_key(host, known)
    where = ssh.endpoint(host.address, host.port, host.user)
    key = services.host_key(host.org)
    return hosts.Target(host.name, where, key.private_key, host.known_hosts)


# At most this many hosts are signed in to at once; each waits SIGN_IN_SECONDS at most.
AT_ONCE = 16


def answering_now(chosen: list[Host]) -> dict[int, str]:
    """Why onwatch cannot sign in to each host at this moment, by its id ("" when it can):
    a host whose check passed once may have gone away since. All at once: one after
    another, each unreachable host kept a person's request waiting its whole limit. Quick,
    and nothing is stored."""
    said = {host.pk: "" for host in chosen}
    asked: dict[int, hosts.Target] = {}
    for host in chosen:  # the database is read here, not in the threads
        said[host.pk], found = _target_now(host)
        if found is not None:
            asked[host.pk] = found
    if asked:
        with ThreadPoolExecutor(max_workers=min(len(asked), AT_ONCE)) as pool:
            for pk, why in zip(asked, pool.map(_why_not_in, asked.values()), strict=True):
                said[pk] = why
    return said


def _target_now(host: Host) -> tuple[str, hosts.Target | None]:
    """What to sign in to, or why there is nothing to (this machine: no need)."""
    if host.local:
        return "", None
    if not host.known_hosts.strip():
        return (
            f"{host.name}'s host key was forgotten: check it (onwatch hosts check {host.name}, "
            "or Check now on its page) to pin the one it shows"
        ), None
    try:
        return "", target(host)
    except hosts.HostError as e:
        return str(e), None


def _why_not_in(found: hosts.Target) -> str:
    try:
        hosts.signs_in(found)
    except hosts.HostError as e:
        return str(e)
    return ""


def check(host: Host, prepare: bool = False) -> list[hosts.Finding]:
    """What the host has, one finding per thing; with `prepare`, what onwatch can install
    is installed first (and what failed is said). Stored on the host; raises HostError
    (stored too) when the host could not be reached or signed in to."""
    try:
        found, skew = _look(host, prepare)
    except hosts.HostError as e:
        services.record_host_check(host, False, [], str(e))
        _alert_once(host)
        raise
    ready = all(f.ok for f in found)
    services.record_host_check(host, ready, [asdict(f) for f in found], clock_skew=skew)
    if ready:
        _recovered(host)
    else:
        _alert_once(host)
    return found


def _look(host: Host, prepare: bool) -> tuple[list[hosts.Finding], float | None]:
    """What the host has, and how far its clock is from onwatch's (None: this machine's
    is onwatch's)."""
    where = target(host)
    name = shlex.quote(host.name)
    facts, skew = _probe(where, host)
    remote = not host.local
    found = hosts.findings(facts, host.allow_sudo, name, caddy_ports(host), remote)
    packages = hosts.to_prepare(found)
    if not prepare or not any(f.preparable and not f.ok for f in found) or not found[0].ok:
        return found, skew
    failed = hosts.prepare(where, hosts.python_path(facts), packages)
    facts, skew = _probe(where, host)
    found = hosts.findings(facts, host.allow_sudo, name, caddy_ports(host), remote)
    return found + [hosts.Finding("prepare", False, line) for line in failed], skew


def _probe(where: hosts.Target, host: Host) -> tuple[dict[str, list[str]], float | None]:
    facts = hosts.parse(hosts.run_script(where, hosts.PROBE))
    answered = onwatch_clock()
    if host.local:
        _manager_here(facts)
        return facts, None
    return facts, hosts.clock_skew(facts, answered)


def onwatch_clock() -> float:
    return time.time()


def clock_line(host: Host) -> str:
    """The check's line for the host's clock ("" when not read): ok within SKEW_SAID."""
    said = hosts.clock_said(host.name, host.clock_skew)
    if not said:
        return ""
    return f"{'warning' if hosts.clock_off(host.clock_skew) else 'ok'}: {said}"


def _manager_here(facts: dict[str, list[str]]) -> None:
    """This machine runs its apps from onwatch's own data directory, with onwatch's own
    supervisord (a dependency) where systemd does not: not from ~/.onwatch as a host."""
    if isinstance(switch.this_machine().supervisor, systemd.Systemd):
        facts["manager"] = ["systemd"]
        return
    facts["manager"] = ["supervisord"]
    facts["supervisord"] = [version("supervisor"), procman.supervisord_command()[0]]


def caddy_ports(host: Host) -> tuple[int, ...]:
    """The ports Caddy takes for the world on an SSH host (this machine's are settings,
    and Caddy's own refusal there says what to do)."""
    if host.local:
        return ()
    return (host.http_port, host.https_port) if host.caddy_https else (host.http_port,)


def _alert_once(host: Host) -> None:
    if host.alerted:
        return
    missing = [f["line"] for f in host.findings if not f["ok"]]
    raise_alert(
        org=host.org,
        title=f"Host {host.name} is not ready for deploys",
        body="\n".join(
            [
                f"What is wrong: {host.check_error or '; '.join(missing)}",
                "What it means: releases cannot be deployed to it until this is fixed.",
                "What to do: see the host's page, fix what it says, then check again; "
                "onwatch says when the host is ready again.",
            ]
        ),
        link=reverse("host_detail", args=[host.pk]),
    )
    services.note_host_alerted(host, True)


def _recovered(host: Host) -> None:
    if not host.alerted:
        return
    raise_alert(
        org=host.org,
        title=f"Host {host.name} is ready for deploys again",
        body="Its last check found everything a deploy needs.",
        link=reverse("host_detail", args=[host.pk]),
        notify_type="success",
    )
    services.note_host_alerted(host, False)
