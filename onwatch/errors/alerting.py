"""The alerts the errors app raises, through the alerts app: what happened (the error's
type and message), since when, what to do, and a link to the issue's page; to the
channels of the service the project is linked to, else to the organization's."""

from __future__ import annotations

from datetime import datetime

from django.urls import reverse

from onwatch.alerts.services import Channel, alert_channels, organization_channels
from onwatch.errors.models import Issue, Project

TODO = {
    "new": "look at where it happens on its page; resolve it once a fix is out, or ignore it "
    "if it is harmless.",
    "regression": "it was marked resolved, but the release named above still has it: look at "
    "the new events and reopen the fix.",
    "back": "it was ignored until now; look at its page and decide again.",
    "volume": "something may be failing for many people: look at its page now.",
    "digest": "no further messages come for these; its page has every event.",
}


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def headline(kind: str, issue: Issue, project: Project, release: str) -> str:
    where = f"{project.name}: "
    if kind == "new":
        return where + f"new error {issue.title}"
    if kind == "regression":
        return where + f"{issue.title} regressed in {release or 'a release without a name'}"
    if kind == "back":
        return where + f"{issue.title} is back"
    if kind == "volume":
        return (
            where + f"{issue.title}: {project.volume_events} events in {project.volume_minutes} min"
        )
    return where + f"{issue.title} is still happening"


def send(kind: str, issue: Issue, project: Project, release: str, more: int = 0) -> None:
    lines = [f"What: {issue.title}"]
    if issue.culprit:
        lines.append(f"Where: {issue.culprit}")
    lines.append(
        f"Since: {_when(issue.first_seen)}"
        + (f", in {issue.first_release}" if issue.first_release else "")
    )
    if kind == "regression" and issue.regressed_at is not None:
        lines.append(f"Back since: {_when(issue.regressed_at)}")
    if kind == "regression":
        lines.append(
            f"Regressed in: {release or '(no release named)'}; "
            f"it was resolved in {issue.resolved_in or 'no named release'}"
        )
    if kind == "digest":
        lines.append(f"Since the last message: {more:,} more event{'s' if more != 1 else ''}")
    lines.append(f"Events so far: {issue.event_count:,}")
    lines.append(f"What to do: {TODO[kind]}")
    alert_channels(
        who_hears(project),
        headline(kind, issue, project, release)[:200],
        "\n".join(lines),
        link=reverse("errors_issue", args=[issue.pk]),
        notify_type="info" if kind == "digest" else "failure",
    )


def who_hears(project: Project) -> list[Channel]:
    """A project linked to a service alerts whoever hears about the service; any other,
    or one whose service's chosen channels are all gone, every channel of its organization
    (never nobody)."""
    if project.service_id is not None:
        from onwatch.deploys import services as deploys

        chosen = deploys.channels_hearing(project.service_id)
        if chosen:
            return chosen
    return organization_channels(project.org)
