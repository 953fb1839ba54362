"""Error tracking: projects (a DSN each), the events their SDKs send, grouped into issues,
and tallies of what was counted rather than stored (refusals, what SDKs dropped,
sessions, cron check-ins)."""

from __future__ import annotations

import secrets
from typing import ClassVar

from django.db import models

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

    objects: ClassVar[models.Manager[Project]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="errors_project_name_unique")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="events")
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

    objects: ClassVar[models.Manager[Event]] = models.Manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "event_id"], name="errors_event_id_unique")
        ]
        indexes = [models.Index(fields=["issue", "user_key"], name="errors_event_issue_user")]
        ordering = ["-received_at"]


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
