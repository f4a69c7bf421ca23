"""The suppression list: addresses Mailqueue must not send to, and why."""

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import QuerySet

from mailqueue.errors import ValidationFailed
from mailqueue.models import Client, EmailJob, EmailStatus, Suppression, SuppressionReason
from mailqueue.services.dead_letters import error_fields
from mailqueue.services.outcomes import Decision
from mailqueue.validation import address_spec, normalize_address
from tracking.models import EventType
from tracking.services import NewEvent, events_record


@dataclass(frozen=True)
class NewSuppression:
    """An entry to add. `client` None means service-wide (hard bounces and complaints)."""

    address: str
    reason: str
    client: Client | None = None
    topic: str = ""
    source_event_id: int | None = None
    # How an unsubscribe arrived, recorded on the topic's subscriber: "api", "link" (one-click),
    # "esp" (an ESP's event); empty for an operator's entry.
    via: str = ""


# Reasons that protect the sending reputation every client shares: service-wide entries.
SERVICE_WIDE_REASONS = frozenset({SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT})


def suppressions_add(*, entries: Iterable[NewSuppression]) -> None:
    """Add entries in one INSERT (addresses normalized); an entry already there is kept as it
    is. Hard bounces and complaints become service-wide whatever client is given. The topic
    subscriptions the entries end are marked unsubscribed in the same transaction."""
    # Imported here: topics.services creates emails through mailqueue.services, which imports
    # this module.
    from topics.services import subscribers_unsubscribe_suppressed

    rows, kept = [], []
    for entry in entries:
        address = address_spec(entry.address)
        if not address:
            continue
        kept.append(entry)
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
        # Without a savepoint: inside a caller's transaction (a webhook's) it costs nothing.
        with transaction.atomic(savepoint=False):
            Suppression.objects.bulk_create(rows, ignore_conflicts=True)
            subscribers_unsubscribe_suppressed(entries=kept)


def suppression_add_manual(*, client: Client, address: str, topic: str = "") -> Suppression:
    """Add (or find) a client's manual entry for an address, optionally for one topic only."""
    spec = _checked_address(address)
    entry, _ = Suppression.objects.get_or_create(
        address=spec, client=client, topic=topic, reason=SuppressionReason.MANUAL
    )
    return entry


def suppressions_remove(
    *, client: Client, address: str, topic: str | None = None, reason: str | None = None
) -> int:
    """Delete the client's own entries for an address (only one topic's when `topic` is given,
    of one reason when `reason` is); service-wide entries stay. Returns how many were deleted."""
    entries = Suppression.objects.filter(client=client, address=_checked_address(address))
    if topic is not None:
        entries = entries.filter(topic=topic)
    if reason is not None:
        entries = entries.filter(reason=reason)
    return suppressions_delete(entries=entries)


def suppressions_delete(*, entries: QuerySet[Suppression]) -> int:
    """Delete entries of any kind, service-wide ones included (operators, in the admin); the
    topic subscriptions a deleted topic unsubscribe had ended become active again."""
    from topics.services import subscribers_resume_unsuppressed  # see suppressions_add

    with transaction.atomic(savepoint=False):
        ended = list(
            entries.filter(reason=SuppressionReason.UNSUBSCRIBE, client__isnull=False)
            .exclude(topic="")
            .values_list("client_id", "topic", "address")
        )
        deleted, _ = entries.delete()
        subscribers_resume_unsuppressed(removed=ended)
    return deleted


def _checked_address(address: str) -> str:
    """The bare lowercased addr-spec of a valid address; ValidationFailed naming `address`."""
    return address_spec(normalize_address(address, field="address"))


def address_unsubscribe(
    *, address: str, client_id: int, topic: str = "", email_id: UUID | None = None
) -> None:
    """Unsubscribe an address from a client's non-transactional email (one topic's, or all):
    a suppression and an `unsubscribed` event (on the email while it still exists)."""
    with transaction.atomic():
        client = Client.objects.filter(pk=client_id).first()
        if client is None:
            return  # the client is gone: nothing of its can be sent any more
        linked = (
            email_id
            if email_id and EmailJob.objects.filter(pk=email_id, client=client).exists()
            else None
        )
        events = events_record(
            events=[
                NewEvent(
                    email_id=linked,
                    event_type=EventType.UNSUBSCRIBED,
                    recipient=address,
                    description=(
                        f"Unsubscribed from topic {topic!r}." if topic else "Unsubscribed."
                    ),
                    data={"topic": topic, "via": "one-click"},
                )
            ]
        )
        suppressions_add(
            entries=[
                NewSuppression(
                    address=address,
                    reason=SuppressionReason.UNSUBSCRIBE,
                    client=client,
                    topic=topic,
                    source_event_id=events[0].pk,
                    via="link",
                )
            ]
        )


# Columns of the admin's CSV export, which its import reads back.
CSV_COLUMNS = ("address", "reason", "client", "topic", "created_at")


@dataclass
class ImportResult:
    """What a CSV import did: rows added (or already there), and refused rows with why."""

    added: int = 0
    errors: list[str] = field(default_factory=list)


def suppressions_import_csv(*, lines: Iterable[str], client: Client | None = None) -> ImportResult:
    """Add entries from CSV text with a header row (`address`, optional `reason` (default
    manual), `client` name, `topic`); `client` applies to rows that name none. Rows with a bad
    address, reason or client are reported, the rest added."""
    result = ImportResult()
    reader = csv.DictReader(lines)
    if not reader.fieldnames or "address" not in [name.strip() for name in reader.fieldnames]:
        result.errors.append("The first row must be a header naming at least `address`.")
        return result
    clients = {c.name: c for c in Client.objects.all().only("pk", "name")}
    entries = []
    for number, row in enumerate(reader, start=2):
        row = {(key or "").strip(): (value or "").strip() for key, value in row.items()}
        reason = row.get("reason") or SuppressionReason.MANUAL
        name = row.get("client", "")
        owner = clients.get(name) if name else client
        try:
            address = _checked_address(row.get("address", ""))
        except ValidationFailed as exc:
            result.errors.append(f"row {number}: {exc.message}")
            continue
        if reason not in SuppressionReason.values:
            result.errors.append(f"row {number}: unknown reason {reason!r}")
            continue
        if name and owner is None:
            result.errors.append(f"row {number}: no client named {name!r}")
            continue
        if owner is None and reason not in SERVICE_WIDE_REASONS:
            result.errors.append(f"row {number}: a {reason} entry needs a client")
            continue
        entries.append(
            NewSuppression(address=address, reason=reason, client=owner, topic=row.get("topic", ""))
        )
    suppressions_add(entries=entries)
    result.added = len(entries)
    return result


def suppressions_export_csv(*, entries: Iterable[Suppression]) -> Iterator[str]:
    """The entries as CSV lines (header first), in the shape the import reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            [
                entry.address,
                entry.reason,
                entry.client.name if entry.client_id else "",
                entry.topic,
                entry.created_at.isoformat(),
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def email_suppression_events(*, email: EmailJob, dropped: dict[str, str]) -> list[NewEvent]:
    """One `suppressed` event per recipient dropped from an email, naming the reason."""
    return [
        NewEvent(
            email_id=email.pk,
            event_type=EventType.SUPPRESSED,
            recipient=address,
            description=f"Not sent to {address}: on the suppression list ({reason}).",
            data={"reason": reason},
        )
        for address, reason in dropped.items()
    ]


def email_decide_suppressed(*, email: EmailJob, dropped: dict[str, str]) -> Decision | None:
    """The decision for an email every recipient of which is suppressed (no provider is
    contacted), or None when some recipient remains."""
    remaining = {address_spec(a) for a in (*email.to, *email.cc, *email.bcc)} - dropped.keys()
    if remaining:
        return None
    reasons = ", ".join(f"{address} ({reason})" for address, reason in dropped.items())
    return Decision(
        email=email,
        status=EmailStatus.SUPPRESSED,
        fields=error_fields(
            error_class="suppressed",
            message=f"Not sent: every recipient is on the suppression list: {reasons}",
        ),
        events=email_suppression_events(email=email, dropped=dropped),
    )


def message_drop_recipients(*, message: EmailMessage, dropped: dict[str, str]) -> None:
    """Remove the dropped addresses from a built message's To, Cc and Bcc."""
    for name in ("to", "cc", "bcc"):
        kept = [a for a in getattr(message, name) if address_spec(a) not in dropped]
        setattr(message, name, kept)
