from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from onwatch.core.fields import EncryptedTextField
from onwatch.core.roles import Role


class Organization(models.Model):
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="one_role_per_org")]


def hash_token(raw: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 cannot be brute-forced and
    # lets a lookup find the row by hash.
    return hashlib.sha256(raw.encode()).hexdigest()


class Invite(models.Model):
    """A one-time link that creates an account with a role; the first owner's comes from
    `onwatch up` or `onwatch createowner --link`."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True)
    role = models.CharField(max_length=10, choices=Role.choices)
    email = models.EmailField(blank=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def issue(
        cls, role: str, org: Organization | None, hours: int = 72, **kwargs: Any
    ) -> tuple[Invite, str]:
        raw = secrets.token_urlsafe(32)
        invite = cls.objects.create(
            role=role,
            org=org,
            token_hash=hash_token(raw),
            expires_at=timezone.now() + timedelta(hours=hours),
            **kwargs,
        )
        return invite, raw

    @property
    def usable(self) -> bool:
        return self.used_at is None and self.expires_at > timezone.now()


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    org = models.ForeignKey(Organization, on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class SshKey(models.Model):
    """A person's SSH public key: with it they `git push` to onwatch (core/pushkeys.py
    writes it into the authorized_keys file), acting as themselves."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys"
    )
    name = models.CharField(max_length=100)
    # "type base64": no options and no comment (onwatch writes the options itself).
    public_key = models.TextField()
    # Unique: a key belongs to one person only, so a push names who pushed.
    fingerprint = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class AuditEntry(models.Model):
    """Append-only and hash-chained: each entry's hash covers its content and the previous
    entry's hash, so editing or deleting any entry breaks every hash after it. The hash is
    keyed and the personal fields are sealed apart (see core/audit_seal.py)."""

    seq = models.PositiveBigIntegerField(unique=True)
    at = models.DateTimeField()
    org = models.ForeignKey(Organization, on_delete=models.SET_NULL, null=True, blank=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=60)
    target = models.CharField(max_length=200, blank=True)
    ip = models.CharField(max_length=45, blank=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # 1: unkeyed sha256 (before the key); 2: HMAC under key_id of the key file.
    scheme = models.PositiveSmallIntegerField(default=2)
    key_id = models.PositiveIntegerField(null=True, blank=True)
    # Per personal field: its salt and commitment (salt None once erased).
    seals = models.JSONField(default=dict)

    class Meta:
        ordering = ["-seq"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ValueError("audit entries are append-only")


class KeyCheck(models.Model):
    """A known text encrypted under the current key: proves at start-up that the key file
    belongs to this database before anything is decrypted or written."""

    value = EncryptedTextField()
    key_id = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


# States a job does not leave: the ones after which nothing more runs.
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED, JobState.CANCELLED)


class Schedule(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=60)
    payload = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=100)
    tz = models.CharField(max_length=60, default="UTC")
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def clean(self) -> None:
        from onwatch.core.crons import validate_schedule

        validate_schedule(self.cron, self.tz)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Refused when saved, from a form or from code: a bad expression never reaches
        # the scheduler this way (a raw UPDATE still can, and the scheduler copes).
        self.clean()
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True)
    kind = models.CharField(max_length=60)
    # Set from the kind's handler when queued (jobs.enqueue): which slots may run it.
    queue = models.CharField(max_length=20, default="short")
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.QUEUED)
    schedule = models.ForeignKey(Schedule, on_delete=models.SET_NULL, null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    run_after = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(null=True, blank=True)
    # The log lives in JobLogLine rows, one place for a running job and an ended one
    # (see `log`). This column holds only the whole log of jobs from before those rows,
    # and the note left when an old job's lines are aged out (jobs.age_out_logs).
    old_log = models.TextField(blank=True, db_column="log")
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    alerted = models.BooleanField(default=False)
    # Who asked to cancel it while it ran; its worker sees this and stops the job.
    cancel_requested_by = models.CharField(max_length=200, blank=True)
    # Not started before this job ends succeeded (a deploy waits for its pipeline).
    after = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="waiters"
    )

    class Meta:
        indexes = [
            models.Index(fields=["state", "queue", "run_after"], name="job_claim_queue"),
            models.Index(fields=["state", "lease_until"], name="job_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    @property
    def log(self) -> str:
        """The whole log: its lines (one query), else what old_log says."""
        lines = list(self.log_lines.order_by("id").values_list("text", flat=True))
        return "\n".join(lines) if lines else self.old_log

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class JobLogLine(models.Model):
    """One line of a job's log, appended as it is written: a long log costs one insert a
    line, and a page following the job asks for the lines after the last id it has. The
    lines are the log of a running and an ended job alike; the housekeeping ages out the
    lines of jobs ended long ago (jobs.age_out_logs)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    at = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["job", "id"], name="job_log_line")]
