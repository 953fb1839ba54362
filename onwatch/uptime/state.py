"""What a check's outcome does to a monitor: confirm before alarm, record each change with
its evidence, and open or resolve the incident. Used by the prober and by heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.urls import reverse

from onwatch.alerts import incidents
from onwatch.alerts.services import send_notice
from onwatch.core import links
from onwatch.uptime.models import Kind, Monitor, State, StateChange

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
    # A run of failures that was cut short (pause, new settings reset the count) does not
    # carry its start over to the next one.
    carried = monitor.failing_since if failures > 1 else None
    monitor.failing_since = None if outcome.ok else (carried or now)
    warned = monitor.warning
    if outcome.ok:
        # Only a check that got through judges the certificate; a failed one keeps the
        # warning it had (the outage is alerted on by itself).
        monitor.warning = str(outcome.details.get("warning", ""))[:300]
        monitor.cert_expires_at = cert_expiry(outcome)
    monitor.last_checked_at = now
    monitor.last_latency_ms = outcome.latency_ms
    monitor.last_error = outcome.error[:1000]
    monitor.next_check_at = now + timedelta(seconds=wait)
    fields = ["failures", "last_checked_at", "last_latency_ms", "last_error", "next_check_at"]
    fields += ["failing_since", "warning", "cert_expires_at"]
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
    if bool(warned) != bool(monitor.warning):
        on_warning(monitor, outcome, now)
    return change


def cert_expiry(outcome: Outcome) -> datetime | None:
    expires = outcome.details.get("expires")
    return datetime.fromisoformat(expires) if isinstance(expires, str) else None


def steady(monitor: Monitor, outcome: Outcome) -> bool:
    """A passing check of a monitor that is up and whose warning neither starts nor ends:
    it changes counters only, and raises nothing."""
    warns = bool(outcome.details.get("warning"))
    return outcome.ok and monitor.state == State.UP and warns == bool(monitor.warning)


def page(monitor: Monitor) -> str:
    return reverse("monitor_detail", args=[monitor.pk])


ADVICE = {
    Kind.HEARTBEAT: (
        "Read what the job sent, fix the job and run it again; the incident is resolved "
        "by its next good ping. Acknowledge it so the others know someone is on it."
    ),
}
CHECK_ADVICE = (
    "Open the monitor's page for the last check's answer, and look at the service and the "
    "machine it runs on; the incident is resolved by the first good check. Acknowledge it "
    "so the others know someone is on it."
)


def about(monitor: Monitor, now: datetime) -> incidents.About:
    return incidents.About(
        began_at=monitor.failing_since or now,
        page=page(monitor),
        advice=ADVICE.get(Kind(monitor.kind), CHECK_ADVICE),
    )


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
            about=about(monitor, now),
        )
    elif change.new == State.UP and change.old == State.DOWN:
        incidents.resolve_incident(
            monitor.org,
            source(monitor),
            change.evidence,
            now=now,
            title=f"{monitor.name} is up again",
        )
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
        incidents.resolve_incident(
            monitor.org,
            source(monitor),
            {"reason": why},
            title=f"{monitor.name}: no longer checked",
        )


def on_warning(monitor: Monitor, outcome: Outcome, now: datetime) -> None:
    """A warning began or ended: its own notice, once, to whoever hears first."""
    link = links.absolute(page(monitor))
    if monitor.warning:
        title = f"{monitor.name}: the certificate {warned_of(outcome)}"
        send_notice(monitor.org, monitor.policy, title, warning_text(monitor, now, link), "warning")
    elif outcome.details.get("expires"):
        title = f"{monitor.name}: the certificate warning is over"
        send_notice(monitor.org, monitor.policy, title, cleared_text(outcome, link), "success")


def warned_of(outcome: Outcome) -> str:
    # Verification off (a test host) lets an expired certificate pass: say so, not "soon".
    return "has expired" if outcome.details.get("expired") else "expires soon"


def warning_text(monitor: Monitor, now: datetime, link: str) -> str:
    return "\n".join(
        [
            f"What is wrong: {monitor.warning}.",
            f"Since: {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            "It still works: this is a warning, not an outage.",
            "What to do: renew the certificate, or check that its automatic renewal works; "
            "the warning clears at the first check that sees the new one.",
            f"Details: {link}",
        ]
    )


def cleared_text(outcome: Outcome, link: str) -> str:
    expires, days = str(outcome.details["expires"])[:10], outcome.details.get("days_left")
    return f"The certificate now expires on {expires} ({days} days from now).\nDetails: {link}"
