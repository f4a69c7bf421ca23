"""A client's webhook endpoints, one delivery per event and endpoint, one row per HTTP attempt.

Writes go through `client_webhooks.services`, reads through `client_webhooks.selectors`.
"""

from django.db import models
from django.utils import timezone

from mailqueue.models import Client, uuid7


class WebhookEndpoint(models.Model):
    """A URL of a client's application that receives its emails' events, signed with `secret`."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="webhook_endpoints", db_index=False
    )
    url = models.CharField(max_length=2000)
    # Event types (tracking.models.EventType values) or ["*"] for every event.
    events = models.JSONField(default=list)
    # Shown once when the endpoint is created; kept to sign every delivery.
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    # Failed attempts in a row (reset by a success); many of them disable the endpoint.
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "webhook_endpoints"
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["client", "created_at"], name="webhook_endpoint_client")]

    def __str__(self) -> str:
        return self.url


class WebhookDeliveryStatus(models.TextChoices):
    """Where one event's delivery to one endpoint stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event to POST to one endpoint, with the exact JSON body it is sent as."""

    # No index of its own: `webhook_delivery_endpoint` starts with it.
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # The same for every endpoint that receives the event, so a receiver can de-duplicate.
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=20)
    payload = models.JSONField()
    status = models.CharField(
        max_length=10, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhook_deliveries"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
            # The admin's newest-first list and "replay everything since a time".
            models.Index(fields=["-created_at", "-id"], name="webhook_delivery_created"),
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_pending",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} [{self.status}]"


class WebhookAttempt(models.Model):
    """One HTTP POST of a delivery: its answer, how long it took, what it said; append-only."""

    # No index of its own: `webhook_attempt_delivery` starts with it.
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempts_made", db_index=False
    )
    # None when no answer came (refused address, connection error, timeout).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["delivery", "created_at"], name="webhook_attempt_delivery")]

    def __str__(self) -> str:
        return f"{self.status_code or self.error[:40]} in {self.duration_ms} ms"
