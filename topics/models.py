"""A client's topics (newsletters, digests) and the addresses subscribed to them.

Writes go through `topics.services`, reads through `topics.selectors`.
"""

import datetime

from django.db import models

from mailqueue.models import Client

DEFAULT_SEND_TIME = datetime.time(9, 0)


class Topic(models.Model):
    """Something a client's recipients subscribe to: its content is either a stored template
    (`template`, a slug looked up at each send) or its own `subject` with `html`/`text`, rendered
    with `context` merged with each subscriber's own."""

    # No index of its own: `topic_client_slug` starts with it.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="topics", db_index=False
    )
    # What emails carry as their `topic`, and what unsubscribe suppressions name.
    slug = models.SlugField(max_length=100, db_index=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    template = models.CharField(
        max_length=100, blank=True, default="", help_text="Slug of a stored template."
    )
    subject = models.CharField(max_length=998, blank=True, default="")
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    double_opt_in = models.BooleanField(
        default=False, help_text="New subscribers confirm through an emailed link first."
    )
    # When recurring sends go out, in the topic's own time zone (an IANA name).
    send_time = models.TimeField(default=DEFAULT_SEND_TIME)
    timezone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "topics"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["client", "slug"], name="topic_client_slug"),
        ]
        indexes = [
            # The API's list: one client's topics, newest first (cursor pages).
            models.Index(fields=["client", "-created_at", "-id"], name="topic_client_created"),
        ]

    def __str__(self) -> str:
        return self.slug


class SubscriberStatus(models.TextChoices):
    """Where a subscription is: only services change it, each with a checked transition."""

    ACTIVE = "active"
    # Double opt-in: the confirmation link has not been followed yet.
    PENDING = "pending"
    UNSUBSCRIBED = "unsubscribed"


class UnsubscribedVia(models.TextChoices):
    """How a subscriber left: each way but bounce/complaint also left the topic's unsubscribe
    suppression (bounces and complaints are service-wide suppressions of their own)."""

    API = "api"
    LINK = "link", "one-click link"
    ESP = "esp", "ESP unsubscribe event"
    BOUNCE = "bounce", "hard bounce"
    COMPLAINT = "complaint"
    ADMIN = "admin", "operator (admin)"


class Frequency(models.TextChoices):
    """How often a subscriber wants the topic's recurring sends (empty: the topic's default)."""

    HOURLY = "@hourly"
    DAILY = "@daily"
    WEEKLY = "@weekly"
    MONTHLY = "@monthly"


class Subscriber(models.Model):
    """An address subscribed to a topic; unsubscribed rows are kept (status and when/how)."""

    # No index of its own: the unique constraint and the list indexes start with it.
    topic = models.ForeignKey(
        Topic, on_delete=models.CASCADE, related_name="subscribers", db_index=False
    )
    # A bare addr-spec, lowercased (like Suppression.address).
    email = models.CharField(max_length=320)
    context = models.JSONField(default=dict, blank=True)
    frequency = models.CharField(max_length=10, choices=Frequency.choices, blank=True, default="")
    status = models.CharField(max_length=12, choices=SubscriberStatus.choices)
    # When the last double opt-in confirmation email was sent: a repeated subscribe sends a
    # new one (the old link may have expired), at most once per throttle period.
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_via = models.CharField(
        max_length=10, choices=UnsubscribedVia.choices, blank=True, default=""
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "topic_subscribers"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["topic", "email"], name="subscriber_topic_email"),
        ]
        indexes = [
            # The API's lists: one topic's subscribers newest first, all or of one status.
            models.Index(fields=["topic", "-created_at", "-id"], name="subscriber_topic_created"),
            models.Index(
                fields=["topic", "status", "-created_at", "-id"], name="subscriber_topic_status"
            ),
            # Suppressions find an address's subscriptions; GDPR export and erase too. Also the
            # admin's prefix search (LIKE 'ada@%'), whatever the collation.
            models.Index(
                fields=["email"], name="subscriber_email", opclasses=["varchar_pattern_ops"]
            ),
            # The admin's list, all or of one status.
            models.Index(fields=["-created_at", "-id"], name="subscriber_created"),
            models.Index(fields=["status", "-created_at"], name="subscriber_status_created"),
            # Recurring sends read a run's audience by id, a chunk at a time (a range scan per
            # chunk however large the topic): the topic's own schedules take the subscribers
            # without a frequency, each frequency's run those with it; the second also finds
            # every (topic, frequency) pair in use without reading the subscribers.
            models.Index(
                fields=["topic", "id"],
                name="subscriber_audience_active",
                condition=models.Q(status="active", frequency=""),
            ),
            models.Index(
                fields=["topic", "frequency", "id"],
                name="subscriber_frequency_active",
                condition=models.Q(status="active") & ~models.Q(frequency=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} [{self.status}]"
