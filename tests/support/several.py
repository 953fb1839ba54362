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

from onwatch.core.models import Organization
from onwatch.deploys import caddy, places, releases, switch
from onwatch.deploys.models import Host

SSH_HOST = "deploy@10.0.0.7"


class GatedPlace(places.LocalPlace):
    """A place whose releases built from a version in `failing` never pass the gate."""

    def __init__(self, machine: switch.Machine, name: str, failing: set[str]) -> None:
        super().__init__(machine, name)
        self.failing = failing

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
            release = dataclasses.replace(release, env={**release.env, "HEALTH": "fail"})
        return super().switch(site, release, on_step, gate, keep_counting, before_count)


@dataclasses.dataclass
class Failing:
    """The versions that fail their gate, on this machine and on the other host."""

    here: set[str] = dataclasses.field(default_factory=set)
    there: set[str] = dataclasses.field(default_factory=set)


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
        return GatedPlace(other, host.name, failing.there)

    monkeypatch.setattr(releases, "place_for", place_for)


def version_at(folder: str) -> str:
    return (Path(folder) / "VERSION").read_text().strip()
