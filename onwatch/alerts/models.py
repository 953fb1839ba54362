from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from onwatch.alerts.apprise import crosses_network_unencrypted
from onwatch.core.fields import EncryptedTextField
from onwatch.core.models import Job, JobState, Organization


class SharedChannels(models.Manager["Channel"]):
    """The organization's channels: a member's own channel is left out of every list,
    picker and organization-wide alert, so it only ever hears of that member's pushes."""

    def get_queryset(self) -> models.QuerySet[Channel]:
        return super().get_queryset().filter(owner=None)


class Channel(models.Model):
    """Where alerts go: an Apprise URL (kept encrypted, it holds tokens and passwords).
    One with an owner is that member's own: where they hear about their own pushes."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=100)
    url = EncryptedTextField()
    # The service's name (mailto, json, slack, ...) shown in lists; the URL itself is secret.
    service = models.CharField(max_length=40)
    # Host and port when Apprise shows them unmasked (see apprise.summarize); blank when the
    # host is itself a token. Lets people tell channels apart without seeing the URL.
    location = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )

    # `objects` leaves members' own channels out (see SharedChannels). Django's own default
    # and base managers see every row: key rotation re-encrypts own channels' URLs too, and
    # a delivery still finds its channel.
    objects = SharedChannels()
    every = models.Manager()

    class Meta:
        ordering = ["name", "id"]
        default_manager_name = "every"
        base_manager_name = "every"
        constraints = [
            models.UniqueConstraint(fields=["org", "owner"], name="one_own_channel_per_member")
        ]

    @property
    def crosses_network_unencrypted(self) -> bool:
        """Saved before plain-HTTP web hooks beyond loopback were refused."""
        return crosses_network_unencrypted(self.service, self.location)

    def __str__(self) -> str:
        return self.name


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"


class Delivery(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(
        Channel, on_delete=models.SET_NULL, null=True, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=100)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    is_test = models.BooleanField(default=False)
    # Apprise's type: failure, warning, success (a recovery) or info (a test).
    notify_type = models.CharField(max_length=10, default="info")
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def shown_state(self) -> str:
        """The state to show: a delivery whose worker died mid-run is not still pending."""
        if (
            self.finished_at is None
            and self.job is not None
            and self.job.state == JobState.INTERRUPTED
        ):
            return "interrupted"
        return str(self.state)


class EscalationPolicy(models.Model):
    """Who hears about an incident, and when: ordered steps while nobody acknowledges it,
    reminders until someone does, and a notice when it is over."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=100)
    # Reminders to everyone already notified, every this many minutes; 0 means none.
    repeat_minutes = models.PositiveIntegerField(default=0)
    notify_recovery = models.BooleanField(default=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class EscalationStep(models.Model):
    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0)
    # Minutes after the incident opened, if still unacknowledged.
    after_minutes = models.PositiveIntegerField(default=0)
    channels = models.ManyToManyField(Channel, related_name="+")

    class Meta:
        ordering = ["position", "id"]


class IncidentState(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Incident(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="incidents")
    # What raised it, e.g. "uptime.monitor:42": at most one unresolved incident per source.
    source = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    state = models.CharField(
        max_length=12, choices=IncidentState.choices, default=IncidentState.OPEN
    )
    policy = models.ForeignKey(EscalationPolicy, on_delete=models.SET_NULL, null=True, blank=True)
    # Without a policy it reaches every channel of the organization, unless whatever opened
    # it chose these (a service's deploy channels): the same people as its other alerts.
    only_channels = models.BooleanField(default=False)
    channels = models.ManyToManyField(Channel, blank=True, related_name="+")
    opened_at = models.DateTimeField(default=timezone.now)
    # When the trouble began (the first failed check), before it was confirmed and opened;
    # null means at the opening.
    began_at = models.DateTimeField(null=True, blank=True)
    # Where onwatch shows what is wrong (e.g. /monitors/42/), and what to do about it: both
    # go into every alert, so whoever reads it can act on it.
    page = models.CharField(max_length=200, blank=True)
    advice = models.TextField(blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Alerts held back (a parent is down, or maintenance): recorded, not sent.
    held = models.CharField(max_length=200, blank=True)
    next_step = models.PositiveIntegerField(default=0)
    # Channel ids told so far: reminders and the recovery notice go to the same people.
    notified = models.JSONField(default=list, blank=True)
    next_action_at = models.DateTimeField(null=True, blank=True, db_index=True)
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "source"],
                condition=~models.Q(state="resolved"),
                name="one_open_incident_per_source",
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def since(self) -> datetime:
        return self.began_at or self.opened_at


class IncidentEvent(models.Model):
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=20)  # opened, notified, reminded, acknowledged, ...
    text = models.TextField(blank=True)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["at", "id"]


class Maintenance(models.Model):
    """A window in which alerts are held back: one-off (starts_at..ends_at) or recurring
    (cron + time zone + duration)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="maintenances")
    name = models.CharField(max_length=100)
    # Sources it covers (e.g. "uptime.monitor:42"); empty means everything in the org.
    sources = models.JSONField(default=list, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True)
    tz = models.CharField(max_length=60, default="UTC")
    duration_minutes = models.PositiveIntegerField(default=0)
    public = models.BooleanField(default=True)  # shown on the status page
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name
