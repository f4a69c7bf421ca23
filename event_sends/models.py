"""Rules that map a client's event type to an email, and the (event, rule) pairs already handled.

Writes go through `event_sends.services`, reads through `event_sends.selectors`.
"""

from django.db import models
from django.utils import timezone

from mailqueue.models import Client, Priority


class EventRule(models.Model):
    """When `client` publishes an event of `event_type`, send `template` to the address found at
    `recipient_path` in the event's data, rendered with the data at `context_path` (all of it
    when empty)."""

    # No index of its own: `event_rule_client_type` starts with it.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="event_rules", db_index=False
    )
    event_type = models.CharField(max_length=100)
    # A slug, like the email API's `template`: the active template is looked up at each send.
    template = models.CharField(max_length=100)
    recipient_path = models.CharField(
        max_length=200, help_text='Dotted path into the event\'s data, e.g. "user.email".'
    )
    context_path = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Dotted path of the template context in the data; empty: the whole data.",
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.DEFAULT)
    tags = models.JSONField(default=list, blank=True)
    # A one-time code or a reset link in the event must not stay readable in the stored email:
    # these context keys are masked the way the OTP API masks its code (services.redaction).
    secret_keys = models.JSONField(
        default=list,
        blank=True,
        help_text='Context keys masked in the stored email once it is sent, e.g. ["code"].',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "event_rules"
        ordering = ["event_type", "id"]
        indexes = [
            models.Index(fields=["client", "event_type"], name="event_rule_client_type"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.template}"


class HandledEvent(models.Model):
    """One event handled by one rule: written in the transaction that creates its email, so a
    re-delivered event finds it and creates nothing. Append-only."""

    # No index of its own: the unique constraint starts with it.
    client = models.ForeignKey(Client, on_delete=models.CASCADE, db_index=False)
    # The producer's id of the event (the JSON's "id"), not the stream entry's id: the same
    # event added twice has two entry ids and one event id.
    event_id = models.CharField(max_length=200)
    rule = models.ForeignKey(EventRule, on_delete=models.CASCADE, related_name="handled_events")
    event_type = models.CharField(max_length=100)
    # The email the rule created (no foreign key: retention may delete emails, not this record).
    email_id = models.UUIDField(null=True, blank=True)
    handled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "event_handled"
        ordering = ["-handled_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "event_id", "rule"], name="event_handled_once"
            )
        ]
        indexes = [models.Index(fields=["-handled_at", "-id"], name="event_handled_recent")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} (rule {self.rule_id})"
