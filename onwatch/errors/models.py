"""Error tracking: projects (a DSN each), the events their SDKs send, grouped into issues,
and tallies of what was counted rather than stored (refusals, what SDKs dropped,
sessions, cron check-ins)."""

from __future__ import annotations

import secrets
from typing import ClassVar

from django.db import models

from onwatch.core.fields import EncryptedTextField
from onwatch.core.models import Organization


def new_key() -> str:
    return secrets.token_hex(16)


class IpMode(models.TextChoices):
    # Truncated by default: enough to tell networks apart, not enough to name a person.
    TRUNCATE = "truncate", "Keep only the network part (last part zeroed)"
    KEEP = "keep", "Keep whole"


class Project(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    public_key = models.CharField(max_length=32, default=new_key, unique=True)
    key_revoked = models.BooleanField(default=False)
    ip_mode = models.CharField(max_length=10, choices=IpMode.choices, default=IpMode.TRUNCATE)
    hourly_quota = models.PositiveIntegerField(default=10_000)
    created_at = models.DateTimeField(auto_now_add=True)
    # The deploys service whose releases this project's events name: onwatch then knows
    # their order (the order it made them live), not only their version numbers.
    service = models.ForeignKey(
        "deploys.Service", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    alert_new_issues = models.BooleanField(default=True)
    alert_regressions = models.BooleanField(default=True)
    # One issue with this many events within volume_minutes is alerted; 0: never.
    volume_events = models.PositiveIntegerField(default=100)
    volume_minutes = models.PositiveIntegerField(default=60)

    objects: ClassVar[models.Manager[Project]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="errors_project_name_unique")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class IssueState(models.TextChoices):
    UNRESOLVED = "unresolved", "Unresolved"
    RESOLVED = "resolved", "Resolved"
    # Fixed in a release not made yet: it becomes resolved in the first release newer than
    # resolved_after, and only events of that release or a later one reopen it.
    RESOLVED_NEXT = "resolved-next", "Resolved in the next release"
    IGNORED = "ignored", "Ignored"
    MERGED = "merged", "Merged into another issue"


class Issue(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="issues")
    grouping_hash = models.CharField(max_length=64)
    # The grouping rules that made grouping_hash: a later change of rules must not
    # silently split or merge the issues made by these.
    grouping_version = models.PositiveSmallIntegerField()
    grouped_by = models.CharField(max_length=20)  # fingerprint, in-app frames, …
    title = models.CharField(max_length=255)
    culprit = models.CharField(max_length=255, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    first_release = models.CharField(max_length=200, blank=True)
    last_release = models.CharField(max_length=200, blank=True)
    event_count = models.PositiveIntegerField(default=0)
    users_affected = models.PositiveIntegerField(default=0)
    state = models.CharField(
        max_length=20, choices=IssueState.choices, default=IssueState.UNRESOLVED, db_index=True
    )
    state_changed_at = models.DateTimeField(null=True, blank=True)
    # Resolved: the release it was fixed in ("": none known, so any event reopens it).
    resolved_in = models.CharField(max_length=200, blank=True)
    # Resolved in the next release: the newest release seen when it was marked so.
    resolved_after = models.CharField(max_length=200, blank=True)
    regressed_in = models.CharField(max_length=200, blank=True)
    regressed_at = models.DateTimeField(null=True, blank=True)
    # Ignored until a time, until event_count reaches a number, or until more than a
    # number of events come in one hour (counted in rate_hour/rate_events). An unresolved
    # issue keeps ignored_until after its time ended the ignoring, until its next event
    # (alerted as back).
    ignored_until = models.DateTimeField(null=True, blank=True)
    ignored_until_count = models.PositiveIntegerField(null=True, blank=True)
    ignored_rate = models.PositiveIntegerField(null=True, blank=True)
    rate_hour = models.DateTimeField(null=True, blank=True)
    rate_events = models.PositiveIntegerField(default=0)
    # Merged: its events and any new ones of its grouping go to this issue.
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged"
    )
    # Alerts: the volume window, and the digest of events after an alert (one later
    # message instead of one per event: a crash loop sends one alert and digests). Both
    # are kept as event_count at a moment, so the usual event writes nothing more.
    window_start = models.DateTimeField(null=True, blank=True)
    window_start_count = models.PositiveIntegerField(default=0)
    digest_due = models.DateTimeField(null=True, blank=True)
    alerted_count = models.PositiveIntegerField(default=0)
    alerted_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[models.Manager[Issue]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "grouping_version", "grouping_hash"],
                name="errors_issue_group_unique",
            )
        ]
        ordering = ["-last_seen"]


class Event(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    # No index of its own: the two below begin with it (one index less per event written).
    issue = models.ForeignKey(
        Issue, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    event_id = models.CharField(max_length=32)
    received_at = models.DateTimeField()
    level = models.CharField(max_length=20, blank=True)
    release = models.CharField(max_length=200, blank=True)
    environment = models.CharField(max_length=64, blank=True)
    # Who it happened to, indexed so a GDPR request can find one person's events.
    user_key = models.CharField(max_length=255, blank=True)
    user_id = models.CharField(max_length=255, blank=True, db_index=True)
    user_email = models.CharField(max_length=255, blank=True, db_index=True)
    user_ip = models.CharField(max_length=45, blank=True, db_index=True)
    data = models.JSONField()  # the event, scrubbed
    # The issue its grouping made, when that issue was merged into the one it is now in:
    # splitting it back out moves exactly these events.
    merged_from = models.ForeignKey(
        Issue, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects: ClassVar[models.Manager[Event]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "event_id"], name="errors_event_id_unique")
        ]
        indexes = [
            models.Index(fields=["issue", "user_key"], name="errors_event_issue_user"),
            # An issue's latest events, and how many came within the last minutes.
            models.Index(fields=["issue", "received_at"], name="errors_event_issue_time"),
        ]
        # Events of one batch share their arrival time (services.digest): the later stored
        # counts as the later, not whichever the database happens to read first.
        ordering = ["-received_at", "-id"]


class Release(models.Model):
    """A release named by the project's events, and when it was first seen: the order of
    last resort for releases neither deployed by onwatch nor numbered."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    first_seen = models.DateTimeField()

    objects: ClassVar[models.Manager[Release]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="errors_release_unique")
        ]
        ordering = ["first_seen", "id"]


class Attachment(models.Model):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, blank=True)
    content = models.BinaryField()

    objects: ClassVar[models.Manager[Attachment]] = models.Manager()


class Tally(models.Model):
    """A count per project, hour and kind: what was refused (and why), what SDKs say they
    dropped, sessions per release, check-ins, events stored (for the hourly quota)."""

    class What(models.TextChoices):
        STORED = "stored", "Events stored"
        REFUSED = "refused", "Events refused"
        SDK_DROPPED = "sdk-dropped", "Events the SDKs dropped"
        SESSIONS = "sessions", "Sessions started"
        CRASHED = "crashed", "Sessions crashed"
        CHECK_INS = "check-ins", "Cron check-ins"
        TRANSACTIONS = "transactions", "Transactions"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    what = models.CharField(max_length=20, choices=What.choices)
    detail = models.CharField(max_length=200, blank=True)  # a reason or a release
    count = models.PositiveBigIntegerField(default=0)

    objects: ClassVar[models.Manager[Tally]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "hour", "what", "detail"], name="errors_tally_unique"
            )
        ]


class Queued(models.Model):
    """An envelope answered 200 and not yet digested, by a version before the spool
    (spooled.py), which no longer queues here: its digest still drains what such a version
    left at the upgrade. The body as it came
    (still compressed, if it came so), encrypted with the keyring, since until it is
    read and scrubbed it holds whatever secrets the SDK sent."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField()
    encoding = models.CharField(max_length=20, blank=True)
    remote_addr = models.CharField(max_length=45, blank=True)
    events = models.PositiveIntegerField()  # counted against the quota when accepted
    body = EncryptedTextField()  # base64 of the body, then encrypted


class SpoolCursor(models.Model):
    """How far the digest has stored one of the intake's spool files (spooled.py): moved in
    the transaction that stores what it read, so a record is stored once, whenever the
    digest is killed."""

    name = models.CharField(max_length=100, unique=True)  # the file's, in the spool folder
    offset = models.BigIntegerField(default=0)
