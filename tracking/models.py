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
    AUTORESPONDED = "autoresponded"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"
    UNKNOWN = "unknown"
    # Ours, not anymail's: the email was cancelled, or recipients were dropped as suppressed.
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"


class TrackingEvent(models.Model):
    """Something that happened to one email, as seen by us or reported by the provider.

    Events an ESP reports (`esp` set) carry its own key, so a replayed webhook writes nothing
    new, and may have no email: one for a message we cannot find is kept, unlinked.
    """

    # No index of its own: `tracking_email_time` starts with it.
    email = models.ForeignKey(
        "mailqueue.EmailJob",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
    )
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    occurred_at = models.DateTimeField()
    provider = models.CharField(max_length=50, blank=True, default="")
    recipient = models.CharField(max_length=320, blank=True, default="")
    description = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    # ESP webhooks: which ESP, its key for the event (its event id, or a hash of the payload
    # fields that identify it), the message id it names, and what anymail normalized.
    esp = models.CharField(max_length=50, blank=True, default="")
    event_key = models.CharField(max_length=200, blank=True, default="")
    message_id = models.CharField(max_length=998, blank=True, default="")
    reject_reason = models.CharField(max_length=50, blank=True, default="")
    mta_response = models.TextField(blank=True, default="")
    click_url = models.TextField(blank=True, default="")
    user_agent = models.TextField(blank=True, default="")
    raw = models.JSONField(default=dict, blank=True)
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
        constraints = [
            # A replayed webhook event is the same (esp, event_key): stored once.
            models.UniqueConstraint(
                fields=["esp", "event_key"],
                condition=~models.Q(event_key=""),
                name="tracking_esp_event_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class TrackedLink(models.Model):
    """A link of an email's HTML rewritten for click tracking: its position among the email's
    links and where it goes. Kept apart from the body, so tracked links keep working when
    retention drops bodies."""

    email = models.ForeignKey(
        "mailqueue.EmailJob", on_delete=models.CASCADE, related_name="tracked_links", db_index=False
    )
    position = models.PositiveIntegerField()
    url = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tracked_links"
        constraints = [
            models.UniqueConstraint(fields=["email", "position"], name="tracked_link_position")
        ]

    def __str__(self) -> str:
        return self.url
