"""The ESP-event service on its own: anymail's `rejected` events suppress like hard bounces,
and ESP bounces feed the admin dashboard's "bounced" line."""

from datetime import UTC, datetime

import pytest
from anymail.signals import AnymailTrackingEvent

from mailqueue.models import Suppression, SuppressionReason
from mailqueue.selectors.dashboard import dashboard_stats
from mailqueue.services import email_create
from tracking.esp_events import esp_events_record

pytestmark = pytest.mark.django_db


def rejected(recipient: str, reason: str, event_id: str) -> AnymailTrackingEvent:
    """An anymail `rejected` event, as e.g. Brevo or SparkPost report a refused address."""
    return AnymailTrackingEvent(
        event_type="rejected",
        recipient=recipient,
        reject_reason=reason,
        event_id=event_id,
        timestamp=datetime.now(tz=UTC),
        esp_event={"id": event_id},
    )


def test_rejected_as_bounced_or_invalid_suppresses_other_reasons_do_not():
    """`rejected` with reason bounced or invalid is permanent; spam or blocked is not."""
    esp_events_record(
        esp="brevo",
        events=[
            rejected("gone@example.com", "bounced", "e1"),
            rejected("typo@example", "invalid", "e2"),
            rejected("busy@example.com", "blocked", "e3"),
            rejected("flagged@example.com", "spam", "e4"),
        ],
    )

    suppressed = dict(Suppression.objects.values_list("address", "reason"))
    assert suppressed == {
        "gone@example.com": SuppressionReason.HARD_BOUNCE,
        "typo@example": SuppressionReason.HARD_BOUNCE,
    }
    assert not Suppression.objects.filter(client__isnull=False).exists()  # service-wide


def test_esp_bounces_feed_the_dashboard_chart(issued_key):
    """The dashboard's bounced line counts the bounces ESPs report."""
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="Hi", text="Hi"
    )
    bounce = AnymailTrackingEvent(
        event_type="bounced",
        recipient="ada@example.com",
        event_id="b1",
        timestamp=datetime.now(tz=UTC),
        metadata={"mailqueue_email_id": str(email.pk)},
        esp_event={"Type": "SoftBounce"},
    )

    esp_events_record(esp="postmark", events=[bounce])

    hourly = dashboard_stats().hourly
    assert sum(bucket.counts.get("bounced", 0) for bucket in hourly) == 1
