"""Monitors (checks onwatch makes, and heartbeats it waits for), their results and history.

Kind-specific settings live in `config` (validated by onwatch/uptime/specs.py), so export
and import round-trip a monitor as one document and a new kind needs no migration. It is
stored encrypted, as every secret is: it may hold credentials.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone

from onwatch.core.fields import EncryptedJSONField
from onwatch.core.models import Organization


class Kind(models.TextChoices):
    HTTP = "http", "HTTP(S)"
    TCP = "tcp", "TCP port"
    DNS = "dns", "DNS record"
    TLS = "tls", "TLS certificate"
    HEARTBEAT = "heartbeat", "Heartbeat"


class State(models.TextChoices):
    PENDING = "pending"  # not checked yet, or failing but not confirmed
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"


class Monitor(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="monitors")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Encrypted whole: header values, a request body and a password in the URL are secrets.
    config = EncryptedJSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    # Checks: how often, how often while failing, how long one may take, and how many
    # failures in a row confirm an outage (few false alarms).
    interval = models.PositiveIntegerField(default=60)
    retry_interval = models.PositiveIntegerField(default=20)
    timeout = models.PositiveIntegerField(default=10)
    confirmations = models.PositiveIntegerField(default=3)
    # Who hears when it goes down; none means every channel of the organization at once.
    policy = models.ForeignKey(
        "alerts.EscalationPolicy", on_delete=models.SET_NULL, null=True, blank=True
    )
    # While the parent is down, this monitor's alerts are held back.
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    created_at = models.DateTimeField(default=timezone.now)

    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    state_since = models.DateTimeField(default=timezone.now)
    failures = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # When the current run of failed checks began: the outage's "since", which is earlier
    # than its confirmation. Null while the last check passed.
    failing_since = models.DateTimeField(null=True, blank=True)
    # A problem short of an outage (a certificate about to expire), set and cleared by the
    # checks; shown wherever the monitor is listed and sent as a notice of its own.
    warning = models.CharField(max_length=300, blank=True)
    # When the certificate the last check that got through saw expires: pages count the
    # days left from it when they are shown, as checks may fail or be paused meanwhile.
    cert_expires_at = models.DateTimeField(null=True, blank=True)
    # Probers claim due monitors for a short lease; a prober that dies lets it run out and
    # another one takes the monitors over.
    next_check_at = models.DateTimeField(default=timezone.now)
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    # Heartbeats: pinged at /ping/<ping_id>/ or /ping/<org ping key>/<slug>/.
    ping_id = models.UUIDField(default=uuid.uuid4, unique=True)
    slug = models.SlugField(max_length=100, blank=True)
    last_ping_at = models.DateTimeField(null=True, blank=True)
    last_start_at = models.DateTimeField(null=True, blank=True)
    # When a heartbeat is overdue (period or cron, plus grace); null while paused or new.
    alarm_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            models.Index(fields=["enabled", "next_check_at"], name="monitor_due"),
            models.Index(fields=["alarm_at"], name="monitor_alarm"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "slug"], condition=~models.Q(slug=""), name="one_slug_per_org"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def warning_now(self) -> str:
        """The warning as of now: a certificate's days left are counted from its stored
        expiry when the page is shown, not taken from the text of the last check that got
        through (later checks may fail, or the monitor may be paused)."""
        if self.warning and self.cert_expires_at is not None:
            return cert_expiry_text(self.cert_expires_at, timezone.now())
        return self.warning


def cert_expiry_text(not_after: datetime, now: datetime) -> str:
    """The same words as the prober's warning (probes.expiry_warning), for any moment."""
    day = f"{not_after:%Y-%m-%d}"
    if not_after <= now:
        return f"The certificate expired on {day}; renew it"
    # Whole days, counted towards zero, as the prober counts them.
    days = int((not_after - now).total_seconds() / 86400)
    return f"The certificate expires in {days} days, on {day}; renew it"


class CheckResult(models.Model):
    """One check's outcome: kept 48 hours, then only in the rollups."""

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="results")
    at = models.DateTimeField(db_index=True)
    ok = models.BooleanField()
    latency_ms = models.PositiveIntegerField(null=True)
    status_code = models.PositiveSmallIntegerField(null=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [models.Index(fields=["monitor", "at"], name="result_monitor_at")]


class Rollup(models.Model):
    """Hourly and daily aggregates, kept at least two years; uptime and charts read these."""

    HOUR, DAY = "h", "d"
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="rollups")
    period = models.CharField(max_length=1, choices=[(HOUR, "hour"), (DAY, "day")])
    start = models.DateTimeField()
    checks = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.PositiveBigIntegerField(default=0)
    latency_max_ms = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["monitor", "period", "start"], name="one_rollup")
        ]


class StateChange(models.Model):
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField(default=timezone.now)
    old = models.CharField(max_length=10, choices=State.choices)
    new = models.CharField(max_length=10, choices=State.choices)
    # What proved it: status, latency, error text, a body excerpt.
    evidence = models.JSONField(default=dict)

    class Meta:
        ordering = ["-at", "-id"]


class Ping(models.Model):
    class Type(models.TextChoices):
        SUCCESS = "success"
        START = "start"
        FAIL = "fail"
        LOG = "log"

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="pings")
    at = models.DateTimeField(default=timezone.now)
    type = models.CharField(max_length=8, choices=Type.choices)
    exit_status = models.SmallIntegerField(null=True)
    run_id = models.UUIDField(null=True)
    duration_ms = models.PositiveBigIntegerField(null=True)
    body = models.TextField(blank=True)  # up to 10 KB
    remote_addr = models.CharField(max_length=45, blank=True)
    method = models.CharField(max_length=8, blank=True)
    user_agent = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [models.Index(fields=["monitor", "at"], name="ping_monitor_at")]


class PingKey(models.Model):
    """An organization's key for slug-addressed pings: /ping/<key>/<slug>/."""

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="ping_key")
    key = models.CharField(max_length=40, unique=True)


class StatusPage(models.Model):
    """A public page (no sign-in) showing chosen monitors under names chosen for it: no
    URL, error text or internal name appears unless someone typed it here."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="status_pages")
    slug = models.SlugField(max_length=60, unique=True)
    title = models.CharField(max_length=100)
    intro = models.TextField(blank=True)
    show_incidents = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.title


class StatusPageItem(models.Model):
    page = models.ForeignKey(StatusPage, on_delete=models.CASCADE, related_name="items")
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="+")
    label = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["page", "monitor"], name="monitor_once_per_page")
        ]
