"""Append-only writes of tracking events."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from django.utils import timezone

from client_webhooks.services import webhooks_dispatch
from tracking.models import TrackingEvent


@dataclass
class NewEvent:
    """An event to record, before it has a row."""

    email_id: UUID
    event_type: str
    provider: str = ""
    recipient: str = ""
    description: str = ""
    data: dict = field(default_factory=dict)
    occurred_at: datetime | None = None


def events_record(*, events: Iterable[NewEvent]) -> list[TrackingEvent]:
    """Write events in one bulk insert."""
    now = timezone.now()
    rows = [
        TrackingEvent(
            email_id=event.email_id,
            event_type=event.event_type,
            provider=event.provider,
            recipient=event.recipient,
            description=event.description[:2000],
            data=event.data,
            occurred_at=event.occurred_at or now,
        )
        for event in events
    ]
    rows = TrackingEvent.objects.bulk_create(rows, batch_size=500)
    # Outbound webhooks for the client's application (nothing while no client has an endpoint).
    webhooks_dispatch(rows)
    return rows
