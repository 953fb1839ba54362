"""Two places for deploys across several hosts, both on this machine: its own (the
`machine` fixture's) and a second supervisord and Caddy of their own, each standing for a
host. A release can be made to fail its health gate on one place only: its process there
answers 500 on its health path (a real gate that really fails)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import timezone

from onwatch.core.audit import SYSTEM
from onwatch.core.models import Organization
from onwatch.deploys import caddy, hostchecks, places, releases, remote, services, switch
from onwatch.deploys.models import Host
from onwatch.deploys.remote import RemotePlace
from onwatch.deploys.switch import Step
from tests.support.ssh_hosts import SshHost

SSH_HOST = "deploy@10.0.0.7"


# The test app's release then answers 500 on its health path: its gate fails.
UNHEALTHY = {"HEALTH": "fail"}


class GatedPlace(places.LocalPlace):
    """A place whose releases built from a version in `failing` run with `env` added:
    by default they never pass the gate; {"FAIL_EVERY": "3"} has every third request fail."""

    def __init__(
        self,
        machine: switch.Machine,
        name: str,
        failing: set[str],
        env: dict[str, str] = UNHEALTHY,
    ) -> None:
        super().__init__(machine, name)
        self.failing, self.env = failing, env

    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch:
        version = (release.directory / "VERSION").read_text().strip()
        if version in self.failing:
            release = dataclasses.replace(release, env={**release.env, **self.env})
        return super().switch(site, release, on_step, gate, keep_counting, before_count)


@dataclasses.dataclass
class Failing:
    """The versions that fail their gate, on this machine and on the other host; and
    whether the other host is gone (its supervisord cannot start: every call fails)."""

    here: set[str] = dataclasses.field(default_factory=set)
    there: set[str] = dataclasses.field(default_factory=set)
    gone: bool = False


def ready_host(org: Organization, name: str = SSH_HOST) -> Host:
    """An SSH host as a passed check leaves it (it is never reached: a place stands in)."""
    user, address = name.split("@")
    return Host.objects.create(
        org=org, name=name, user=user, address=address, ready=True, checked_at=timezone.now()
    )


def two_places(monkeypatch: pytest.MonkeyPatch, other: switch.Machine, failing: Failing) -> None:
    """This machine's host is `releases.machine()`; every other host is `other`."""

    def place_for(host: Host) -> places.Place:
        if host.local:
            return GatedPlace(releases.machine(), host.name, failing.here)
        if failing.gone:
            # Under a file, where no folder can be made: nothing of it can start.
            blocked = Path(other.root) / "blocked"
            blocked.touch()
            return GatedPlace(switch.Machine(blocked / "root", other.options), host.name, set())
        return GatedPlace(other, host.name, failing.there)

    monkeypatch.setattr(releases, "place_for", place_for)


def version_at(folder: str) -> str:
    return (Path(folder) / "VERSION").read_text().strip()


class GatedRemote(RemotePlace):
    """An SSH host whose releases built from a version in `failing` never pass the gate
    (their process there answers 500 on its health path), and whose connection is cut
    while a version in `cut` waits for its gate (as a network gone)."""

    def __init__(self, made: RemotePlace, failing: set[str], cut: set[str]) -> None:
        super().__init__(made.target, made.options)
        self.failing, self.cut = failing, cut

    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch:
        # The host is this machine in tests: its folder can be read here.
        version = (release.directory / "VERSION").read_text().strip()
        if version in self.failing:
            release = dataclasses.replace(release, env={**release.env, "HEALTH": "fail"})
        told = self.cutting(on_step) if version in self.cut else on_step
        return super().switch(site, release, told, gate, keep_counting, before_count)

    def cutting(self, on_step: Callable[[Step], None]) -> Callable[[Step], None]:
        link = self.link

        def cut(step: Step) -> None:
            if step.name == "health gate" and step.ended is None and link is not None:
                link.proc.kill()  # onwatch's end of ssh is no more
            on_step(step)

        return cut


def checked_ssh_host(org: Organization, made: SshHost) -> Host:
    """The loopback host added as people add it (with Caddy's ports of its own) and
    checked for real: ready for deploys."""
    made.sshd.authorize(services.host_key(org).public_key)
    fields = services.HostFields(
        address=made.name,
        allow_sudo=True,  # the tests sign in as whoever runs them: root in CI
        caddy_https=False,
        http_port=made.options.http_port,
        https_port=made.options.https_port,
        health_port=made.options.health_port,
    )
    host = services.add_host(org, fields, SYSTEM)
    # Prepared as people prepare a host: the @reboot line is what a bare check misses.
    found = hostchecks.check(host, prepare=True)
    assert all(f.ok for f in found), [f.line for f in found if not f.ok]
    host.refresh_from_db()
    return host


def ssh_places(
    monkeypatch: pytest.MonkeyPatch, failing: dict[str, set[str]], cut: dict[str, set[str]]
) -> None:
    """Each SSH host's place fails its gate for the versions `failing` names for it, and
    loses its connection mid-switch for those `cut` names."""

    def place_for(host: Host) -> places.Place:
        made = remote.place_of(host)
        return GatedRemote(made, failing.get(host.name, set()), cut.get(host.name, set()))

    monkeypatch.setattr(releases, "place_for", place_for)
