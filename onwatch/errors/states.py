"""What one new event does to its issue's state, decided without writing: a resolved
issue regresses only on an event of its resolving release or a later one, an ignored one
comes back when its condition is met, and which alert (if any) the event raises. Alerts
are grouped: after one alert, further events of the issue wait for one digest later."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from onwatch.errors import order
from onwatch.errors.models import Event, Issue, IssueState, Project

# The first digest follows an alert this long after it; each next one waits twice as long
# (a crash loop that goes on all day sends a handful of messages, not one per minute).
DIGEST_MINUTES = 10
DIGEST_MAX_MINUTES = 24 * 60
# A digest this late did not run (its job failed or was cancelled): alerts are no longer
# held back for it, so one lost job cannot silence an issue for ever.
DIGEST_STALE = timedelta(hours=1)


def digest_pending(issue: Issue, now: datetime) -> bool:
    return issue.digest_due is not None and issue.digest_due > now - DIGEST_STALE


@dataclass
class Outcome:
    fields: dict[str, Any] = field(default_factory=dict)  # what changes on the issue
    alert: str = ""  # new, regression, back, volume; "" for none


def reopens(project: Project, issue: Issue, release: str) -> bool:
    """Whether an event of `release` shows the resolved issue is not fixed."""
    if issue.state == IssueState.RESOLVED:
        # Without a resolving release, or an event naming none, onwatch cannot tell it
        # is older: it reopens rather than look healthier than it is.
        if not issue.resolved_in or not release:
            return True
        return order.at_or_after(project, release, issue.resolved_in)
    if issue.state == IssueState.RESOLVED_NEXT:
        # Events of the releases already out are expected; one of a newer release is not.
        if not release:
            return False
        if not issue.resolved_after:
            return True
        # Only a release known to be newer: one merely seen for the first time may be an
        # old client's, and leaves it waiting (as note_release does).
        after = issue.resolved_after
        if order.known_newer(project, release, after) is not True:
            return False
        # A commit out already when the issue was marked is not the next release.
        return not order.live_by(order.first_live(project), release, issue.state_changed_at)
    return False


def ignore_ends(issue: Issue, now: datetime, hour: datetime) -> tuple[bool, dict[str, Any]]:
    """Whether this event ends the issue's ignoring, and the rate count to keep if not."""
    count = issue.event_count + 1
    if issue.ignored_until is not None and now >= issue.ignored_until:
        return True, {}
    if issue.ignored_until_count is not None and count >= issue.ignored_until_count:
        return True, {}
    if issue.ignored_rate is None:
        return False, {}
    events = issue.rate_events + 1 if issue.rate_hour == hour else 1
    if events > issue.ignored_rate:
        return True, {}
    return False, {"rate_hour": hour, "rate_events": events}


def back_to_unresolved(now: datetime) -> dict[str, Any]:
    return {
        "state": IssueState.UNRESOLVED,
        "state_changed_at": now,
        "ignored_until": None,
        "ignored_until_count": None,
        "ignored_rate": None,
    }


def volume(project: Project, issue: Issue, count: int, now: datetime, unsaved: int = 1) -> Outcome:
    """An alert when the issue had volume_events events within volume_minutes.

    `count` - window_start_count is the number of events since window_start: never fewer
    than those within the last volume_minutes, so the events are counted exactly (one
    indexed query) only once that number reaches the threshold, not on every event.
    `unsaved`: the issue's events not in the table yet (this one, and the ones before it
    in the batch being written), all within the window."""
    base, fields = issue.window_start_count, {}
    if issue.window_start is None:
        base = count - 1
        fields = {"window_start": now, "window_start_count": base}
    threshold = project.volume_events
    # While a digest is pending its alert would be held back anyway: no need to count.
    if not threshold or count - base < threshold or digest_pending(issue, now):
        return Outcome(fields)
    start = now - timedelta(minutes=project.volume_minutes)
    exact = Event.objects.filter(issue=issue, received_at__gt=start).count() + unsaved
    if exact >= threshold:
        # The next alert needs as many events again.
        return Outcome({"window_start": now, "window_start_count": count}, "volume")
    return Outcome({"window_start": start, "window_start_count": count - exact})


def decide(
    project: Project,
    issue: Issue,
    created: bool,
    release: str,
    now: datetime,
    hour: datetime,
    unsaved: int = 1,
) -> Outcome:
    # The issue's events with this one (an issue just made counts it already).
    count = issue.event_count if created else issue.event_count + 1
    if created:
        # Its first event starts the volume window too; "new" tells of it already.
        found = volume(project, issue, count, now, unsaved)
        if project.alert_new_issues:
            found.alert = "new"
        return found
    if issue.state in (IssueState.RESOLVED, IssueState.RESOLVED_NEXT):
        if not reopens(project, issue, release):
            return Outcome()
        fields = {**back_to_unresolved(now), "regressed_in": release, "regressed_at": now}
        return Outcome(fields, "regression" if project.alert_regressions else "")
    if issue.state == IssueState.IGNORED:
        ends, counted = ignore_ends(issue, now, hour)
        return Outcome(back_to_unresolved(now), "back") if ends else Outcome(counted)
    if issue.ignored_until is not None:
        # Its ignoring ended with its time (services.end_ignoring): this is the first event
        # since, and news, as when the event itself had ended it.
        return Outcome({"ignored_until": None}, "back")
    return volume(project, issue, count, now, unsaved)


def grouped(issue: Issue, outcome: Outcome, count: int, now: datetime) -> bool:
    """Hold a volume or comeback alert back while a digest of the issue is pending (its
    events go into that digest; a regression, which someone's "resolved" made news, still
    goes out). True when a digest is to be scheduled."""
    if not outcome.alert:
        return False
    if digest_pending(issue, now):
        if outcome.alert != "regression":
            outcome.alert = ""
        return False
    outcome.fields.update(
        alerted_at=now,
        digest_due=now + timedelta(minutes=DIGEST_MINUTES),
        alerted_count=count,
    )
    return True
