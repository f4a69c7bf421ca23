"""The suppression list: addresses Mailqueue must not send to, and why."""

from collections.abc import Iterable
from dataclasses import dataclass

from mailqueue.models import Client, Suppression, SuppressionReason
from mailqueue.validation import address_spec


@dataclass(frozen=True)
class NewSuppression:
    """An entry to add. `client` None means service-wide (hard bounces and complaints)."""

    address: str
    reason: str
    client: Client | None = None
    topic: str = ""
    source_event_id: int | None = None


# Reasons that protect the sending reputation every client shares: service-wide entries.
SERVICE_WIDE_REASONS = frozenset({SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT})


def suppressions_add(*, entries: Iterable[NewSuppression]) -> None:
    """Add entries in one INSERT (addresses normalized); an entry already there is kept as it
    is. Hard bounces and complaints become service-wide whatever client is given."""
    rows = []
    for entry in entries:
        address = address_spec(entry.address)
        if not address:
            continue
        client = None if entry.reason in SERVICE_WIDE_REASONS else entry.client
        rows.append(
            Suppression(
                address=address,
                reason=entry.reason,
                client=client,
                topic=entry.topic,
                source_event_id=entry.source_event_id,
            )
        )
    if rows:
        Suppression.objects.bulk_create(rows, ignore_conflicts=True)
