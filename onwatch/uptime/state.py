"""What a check's outcome does to a monitor: confirm before alarm, record each change with
its evidence, and open or resolve the incident. Used by the prober and by heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from onwatch.alerts import incidents
from onwatch.uptime.models import Monitor, State, StateChange

ERROR_SHOWN = 200  # characters of an error text in incidents, alerts and lists
ERROR_KEPT = 4000  # characters of it kept as evidence


@dataclass
class Outcome:
    ok: bool
    latency_ms: int | None = None
    status_code: int | None = None
    error: str = ""
    # Extra proof kept with a state change: body excerpt, certificate days left, ...
    details: dict[str, Any] = field(default_factory=dict)

    def readable(self) -> Outcome:
        """Cut a long error text to one readable line for the incident, its alerts and the
        lists; the whole text stays in the evidence on the monitor's page. (A target that
        answers random bytes gets them quoted back, escaped, kilobytes long.)"""
        text = " ".join(self.error.split())
        if len(text) > ERROR_SHOWN:
            self.details["error_full"] = self.error[:ERROR_KEPT]
            text = text[: ERROR_SHOWN - 1].rstrip() + "…"
        self.error = text
        return self

    def evidence(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "ok": self.ok,
            "latency_ms": self.latency_ms,
            "status": self.status_code,
        }
        if self.error:
            found["error"] = self.error
        return {**found, **self.details}


def source(monitor: Monitor) -> str:
    return f"uptime.monitor:{monitor.pk}"


def apply(monitor: Monitor, outcome: Outcome, now: datetime) -> StateChange | None:
    """Update the monitor's counters and state; return the state change, if any.

    Goes down only after `confirmations` failures in a row (checked at the retry interval
    meanwhile); comes up on the first success.
    """
    failures = 0 if outcome.ok else monitor.failures + 1
    old = str(monitor.state)
    new: str
    if outcome.ok:
        new = State.UP
    elif failures >= monitor.confirmations:
        new = State.DOWN
    else:
        new = old  # unconfirmed: keep the state, look again sooner
    retrying = not outcome.ok and new != State.DOWN
    wait = monitor.retry_interval if retrying else monitor.interval
    monitor.failures = failures
    monitor.last_checked_at = now
    monitor.last_latency_ms = outcome.latency_ms
    monitor.last_error = outcome.error[:1000]
    monitor.next_check_at = now + timedelta(seconds=wait)
    fields = ["failures", "last_checked_at", "last_latency_ms", "last_error", "next_check_at"]
    change = None
    with transaction.atomic():
        if new != old:
            monitor.state, monitor.state_since = new, now
            fields += ["state", "state_since"]
            change = StateChange.objects.create(
                monitor=monitor, at=now, old=old, new=new, evidence=outcome.evidence()
            )
        monitor.save(update_fields=fields)
    if change is not None:
        on_change(monitor, change, now)
    return change


def on_change(monitor: Monitor, change: StateChange, now: datetime) -> None:
    if change.new == State.DOWN:
        parent = monitor.parent
        held = f"{parent.name} is down" if parent and parent.state == State.DOWN else ""
        incidents.open_incident(
            monitor.org,
            source(monitor),
            f"{monitor.name} is down",
            change.evidence,
            now=now,
            policy=monitor.policy,
            held=held,
        )
    elif change.new == State.UP and change.old == State.DOWN:
        incidents.resolve_incident(monitor.org, source(monitor), change.evidence, now=now)
        # Children whose alerts were held back because of this one: those still down
        # now alert for themselves.
        for child in monitor.children.filter(state=State.DOWN):
            waiting = incidents.current(child.org, source(child))
            if waiting is not None and waiting.held:
                incidents.release(waiting, now)


def close_incident(monitor: Monitor, actor: str, why: str) -> None:
    """A monitor nobody checks any more (paused, removed) cannot recover: its open incident
    would remind people for ever, so it is resolved, with the reason in its timeline."""
    incident = incidents.current(monitor.org, source(monitor))
    if incident is not None:
        incidents.add_note(incident, actor or "onwatch", why)
        incidents.resolve_incident(monitor.org, source(monitor), {"reason": why})
