"""Delivery and engagement events, one append-only row each."""

from django.db import models


class EventType(models.TextChoices):
    """Event names follow anymail's normalized tracking events."""

    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    REJECTED = "rejected"
    BOUNCED = "bounced"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    CANCELLED = "cancelled"


class TrackingEvent(models.Model):
    """Something that happened to one email, as seen by us or reported by the provider."""

    email = models.ForeignKey("mailqueue.EmailJob", on_delete=models.CASCADE, related_name="events")
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    occurred_at = models.DateTimeField()
    provider = models.CharField(max_length=50, blank=True, default="")
    recipient = models.CharField(max_length=320, blank=True, default="")
    description = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "email_tracking"
        ordering = ["occurred_at", "id"]
        indexes = [
            models.Index(fields=["email", "occurred_at"], name="tracking_email_time"),
            # The admin's newest-first list: without it, every page sorts the whole table.
            models.Index(fields=["-occurred_at", "-id"], name="tracking_time"),
            models.Index(fields=["event_type", "occurred_at"], name="tracking_type_time"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"
