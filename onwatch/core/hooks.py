"""Hooks that core calls and other apps fill in, so that core imports no other app.

Core notices trouble of its own (a job failed, a schedule had to be switched off) but the
channels that carry alerts belong to the alerts app, which registers itself here in its
AppConfig.ready. So do the routers of the typed API. The same pattern serves the
scheduler's tick hooks (`every_tick`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from onwatch.core.models import Organization

log = logging.getLogger(__name__)


class Alerter(Protocol):
    def __call__(self, org: Organization | None, title: str, body: str, link: str) -> object: ...


_alerters: dict[str, Alerter] = {}


def on_alert(name: str, alerter: Alerter) -> None:
    """Register who carries core's alerts; a name registered twice keeps the last one."""
    _alerters[name] = alerter


def alert(org: Organization | None, title: str, body: str, link: str = "") -> None:
    """Raise an alert through every registered alerter; nobody registered is an error in
    the log, never a silent drop."""
    if not _alerters:
        log.error("no app carries alerts (is onwatch.alerts installed?); lost: %s", title)
    for alerter in _alerters.values():
        alerter(org=org, title=title, body=body, link=link)


@dataclass(frozen=True)
class Mount:
    prefix: str
    router: str  # "module:attribute", imported when the API's URLs are built
    tag: str


# Mounted in registration order; named by import path so a worker or prober, which never
# serves the API, does not import ninja and pydantic for it.
ROUTERS: dict[str, Mount] = {}


def add_router(prefix: str, router: str, tag: str) -> None:
    """Mount an app's router (`"onwatch.uptime.api:monitors"`) at /api/v1/<prefix>."""
    ROUTERS[prefix] = Mount(prefix, router, tag)


# Tidying a worker does once when it starts, before it takes a job (a worker that died
# left things behind on this machine that only a worker here can remove).
WORKER_START: dict[str, Callable[[], object]] = {}


def on_worker_start(name: str, hook: Callable[[], object]) -> None:
    WORKER_START[name] = hook


def worker_started() -> None:
    """Run every start hook; one that fails is logged and never stops the worker."""
    for name, hook in WORKER_START.items():
        try:
            hook()
        except Exception:
            log.exception("worker start step %s failed", name)
