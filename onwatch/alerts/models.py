from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from onwatch.core.fields import EncryptedTextField
from onwatch.core.models import Job, Organization


class Channel(models.Model):
    """Where alerts go: an Apprise URL (kept encrypted, it holds tokens and passwords)."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=100)
    url = EncryptedTextField()
    # The service's name (mailto, json, slack, ...) shown in lists; the URL itself is secret.
    service = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )

    class Meta:
        ordering = ["name", "id"]

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
