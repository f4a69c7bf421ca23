"""Events an ESP reports through its webhook: stored once each, linked to their emails, and
turned into the emails' fate timestamps and into suppressions.

A webhook request carries up to hundreds of events; `esp_events_record` writes them all with a
fixed number of statements, whatever their count.
"""

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from anymail.signals import AnymailTrackingEvent
from django.db import connection, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from client_webhooks.services import webhooks_dispatch
from mailqueue.db import column_list, json_dumps, json_recordset, json_rows, server_binding_cursor
from mailqueue.models import Client, EmailJob, SuppressionReason
from mailqueue.services.suppressions import NewSuppression, suppressions_add
from tracking.models import EventType, TrackingEvent

# Metadata key the worker sends with every ESP message (see email_build_message).
EMAIL_ID_METADATA_KEY = "mailqueue_email_id"

# The email column that keeps the first occurrence of each event type.
FATE_COLUMNS = {
    EventType.DELIVERED: "delivered_at",
    EventType.OPENED: "opened_at",
    EventType.CLICKED: "clicked_at",
    EventType.BOUNCED: "bounced_at",
    EventType.COMPLAINED: "complained_at",
}

# Payload fields that identify an event of an ESP that gives events no id of its own (Postmark
# deliveries, opens and clicks): the hash of these is the event's key. Other ESPs without an id
# hash their whole payload.
IDENTIFYING_FIELDS = {
    "postmark": (
        "RecordType",
        "Type",
        "MessageID",
        "Recipient",
        "Email",
        "DeliveredAt",
        "ReceivedAt",
        "BouncedAt",
        "ChangedAt",
        "OriginalLink",
    ),
}

_EVENT_TYPES = frozenset(EventType.values)
_KEY_MAX = TrackingEvent._meta.get_field("event_key").max_length


@dataclass
class _Parsed:
    """One normalized event as a row to write, with what linking and suppression need."""

    row: TrackingEvent
    email_id: UUID | None
    hard_bounce: bool


def _text(value: object, limit: int | None = None) -> str:
    """A payload value as text ("" for none) without NULs (PostgreSQL refuses them), cut to
    `limit` characters."""
    text = "" if value is None else str(value).replace("\x00", "")
    return text[:limit] if limit else text


def _without_nuls(value: object) -> object:
    """JSON data with NUL characters dropped from every string (jsonb refuses them)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nuls(item) for item in value]
    if isinstance(value, dict):
        return {_without_nuls(key): _without_nuls(item) for key, item in value.items()}
    return value


def _json_safe(value: object) -> object:
    """The ESP's payload as storable JSON (a QueryDict, from Mailgun's legacy webhooks, as
    lists)."""
    if hasattr(value, "lists"):
        value = dict(value.lists())
    return _without_nuls(json.loads(json.dumps(value, default=str)))


def _email_id(metadata: object) -> UUID | None:
    """The email id the worker put in the message's metadata, if it is a UUID."""
    if not isinstance(metadata, Mapping):
        return None
    try:
        return UUID(str(metadata.get(EMAIL_ID_METADATA_KEY)))
    except ValueError:
        return None


def _bounded_key(key: str) -> str:
    """The key itself, or its hash when it is longer than the column."""
    if len(key) <= _KEY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _event_key(esp: str, event: AnymailTrackingEvent, raw: object, shared_ids: set[str]) -> str:
    """The event's key, unique per ESP: its id, or a hash of the payload fields naming it."""
    event_id = _text(event.event_id)
    if event_id and event_id in shared_ids:
        # One notification for several recipients (SES): anymail gives each the same id.
        return _bounded_key(f"{event_id}:{_text(event.recipient).lower()}")
    if event_id:
        return _bounded_key(event_id)
    fields = IDENTIFYING_FIELDS.get(esp)
    if fields and isinstance(raw, Mapping):
        identity = {name: raw.get(name) for name in fields}
    else:
        identity = raw
    payload = json.dumps(
        [event.event_type, _text(event.recipient), identity], sort_keys=True, default=str
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def _is_hard_bounce(esp: str, event: AnymailTrackingEvent) -> bool:
    """Whether the ESP reports a permanent failure (anymail's `bounced` also covers soft ones)."""
    if event.event_type == EventType.REJECTED:
        return event.reject_reason in {"bounced", "invalid"}
    if event.event_type != EventType.BOUNCED:
        return False
    raw = event.esp_event if isinstance(event.esp_event, Mapping) else {}
    if esp == "postmark":
        return raw.get("Type") == "HardBounce"
    if esp == "amazon_ses":
        return (raw.get("bounce") or {}).get("bounceType") == "Permanent"
    if esp == "mailgun":
        return (raw.get("event-data") or {}).get("severity") == "permanent"
    if esp == "sendgrid":
        return raw.get("event") == "bounce" and raw.get("type", "bounce") == "bounce"
    if esp == "resend":
        bounce = (raw.get("data") or {}).get("bounce") or {}
        return bounce.get("type") == "Permanent"
    if esp == "simulator":
        return raw.get("type") == "HardBounce"
    # An ESP whose bounces we cannot tell apart: never suppress on a guess.
    return False


def _parse(esp: str, events: Sequence[AnymailTrackingEvent], now: datetime) -> list[_Parsed]:
    """The request's events as rows, without duplicates (keyed as they will be stored)."""
    id_counts = Counter(_text(event.event_id) for event in events if event.event_id)
    shared_ids = {event_id for event_id, count in id_counts.items() if count > 1}
    parsed: dict[str, _Parsed] = {}
    for event in events:
        raw = _json_safe(event.esp_event)
        key = _event_key(esp, event, raw, shared_ids)
        if key in parsed:
            continue
        occurred_at = event.timestamp or now
        if timezone.is_naive(occurred_at):
            occurred_at = timezone.make_aware(occurred_at, UTC)
        event_type = event.event_type if event.event_type in _EVENT_TYPES else EventType.UNKNOWN
        row = TrackingEvent(
            event_type=event_type,
            occurred_at=occurred_at,
            provider=esp,
            esp=esp,
            event_key=key,
            message_id=_text(event.message_id, 998),
            recipient=_text(event.recipient, 320),
            reject_reason=_text(event.reject_reason, 50),
            description=_text(event.description, 2000),
            mta_response=_text(event.mta_response, 2000),
            click_url=_text(event.click_url, 2000),
            user_agent=_text(event.user_agent, 1000),
            raw=raw if isinstance(raw, dict) else {"payload": raw},
        )
        parsed[key] = _Parsed(row, _email_id(event.metadata), _is_hard_bounce(esp, event))
    return list(parsed.values())


def _emails_by_reference(parsed: list[_Parsed]) -> tuple[dict[UUID, EmailJob], dict[str, EmailJob]]:
    """The emails the events name, by id and by message id, in one query."""
    ids = {item.email_id for item in parsed if item.email_id}
    message_ids = set()
    for item in parsed:
        if item.row.message_id:
            # Mailgun's events wrap the id in <>, its send response may not: try both.
            message_ids |= {item.row.message_id, item.row.message_id.strip("<>")}
    if not ids and not message_ids:
        return {}, {}
    # Also the columns an outbound webhook's payload shows, so dispatching needs no query.
    emails = EmailJob.objects.filter(
        Q(pk__in=ids) | (Q(message_id__in=message_ids) & ~Q(message_id=""))
    ).only("id", "message_id", "client_id", "topic", "to", "tags", "metadata", "batch_id")
    by_id, by_message_id = {}, {}
    for email in emails:
        by_id[email.pk] = email
        if email.message_id:
            by_message_id[email.message_id] = email
    return by_id, by_message_id


def _link(parsed: list[_Parsed]) -> dict[str, EmailJob]:
    """Set each row's email (by the metadata id first, then the message id); the emails by key."""
    by_id, by_message_id = _emails_by_reference(parsed)
    linked = {}
    for item in parsed:
        message_id = item.row.message_id
        email = (
            by_id.get(item.email_id)
            or by_message_id.get(message_id)
            or by_message_id.get(message_id.strip("<>"))
        )
        if email is not None:
            item.row.email_id = email.pk
            linked[item.row.event_key] = email
    return linked


def _fates_update(rows: list[TrackingEvent]) -> None:
    """Keep each linked email's first delivery, open, click, bounce and complaint, in one UPDATE."""
    firsts: dict[str, dict[UUID, datetime]] = {}
    for row in rows:
        column = FATE_COLUMNS.get(row.event_type)
        if column and row.email_id:
            times = firsts.setdefault(column, {})
            earlier = times.get(row.email_id)
            times[row.email_id] = min(earlier, row.occurred_at) if earlier else row.occurred_at
    if not firsts:
        return
    updates = {}
    for column, times in firsts.items():
        # LEAST(COALESCE(x, t), t): set when empty, moved only to an earlier time.
        whens = [
            When(
                pk=email_id,
                then=Least(
                    Coalesce(F(column), Value(at, output_field=DateTimeField())),
                    Value(at, output_field=DateTimeField()),
                ),
            )
            for email_id, at in times.items()
        ]
        updates[column] = Case(*whens, default=F(column), output_field=DateTimeField())
    email_ids = {email_id for times in firsts.values() for email_id in times}
    EmailJob.objects.filter(pk__in=email_ids).update(**updates)


def _suppressions(parsed: list[_Parsed], linked: dict[str, EmailJob]) -> list[NewSuppression]:
    """Suppressions the new events call for: hard bounces and complaints for everyone, an ESP
    unsubscribe for the client (and topic) of the email it names."""
    entries = []
    for item in parsed:
        row = item.row
        # A test key's simulated events suppress nothing: the simulator's addresses must answer
        # the same way at every test run.
        if not row.recipient or row.esp == "simulator":
            continue
        if item.hard_bounce:
            reason = SuppressionReason.HARD_BOUNCE
        elif row.event_type == EventType.COMPLAINED:
            reason = SuppressionReason.COMPLAINT
        elif row.event_type == EventType.UNSUBSCRIBED and row.event_key in linked:
            email = linked[row.event_key]
            entries.append(
                NewSuppression(
                    address=row.recipient,
                    reason=SuppressionReason.UNSUBSCRIBE,
                    # The id alone: no query for the client row.
                    client=Client(pk=email.client_id),
                    topic=email.topic,
                    source_event_id=row.pk,
                    via="esp",
                )
            )
            continue
        else:
            continue
        entries.append(NewSuppression(address=row.recipient, reason=reason, source_event_id=row.pk))
    return entries


def _insert_new(esp: str, parsed: list[_Parsed]) -> list[_Parsed]:
    """INSERT the events not stored yet, in one statement; the ones this call stored, with their
    ids. An event stored before, or by a concurrent delivery of the same webhook, is not
    returned: only the request that stored an event acts on it."""
    if connection.vendor != "postgresql":
        return _insert_new_with_orm(esp, parsed)
    table = connection.ops.quote_name(TrackingEvent._meta.db_table)
    # The conflict target is the partial unique index `tracking_esp_event_key`. A row that
    # conflicts with one another transaction is writing waits for it, then is skipped.
    sql = (
        f"INSERT INTO {table} {column_list(TrackingEvent)} "  # noqa: S608 (quoted names only)
        f"SELECT * FROM {json_recordset(TrackingEvent, 'new_row')} "
        "ON CONFLICT (esp, event_key) WHERE event_key <> '' DO NOTHING RETURNING id, event_key"
    )
    with server_binding_cursor() as cursor:
        cursor.execute(sql, [json_dumps(json_rows(TrackingEvent, [item.row for item in parsed]))])
        stored = {event_key: pk for pk, event_key in cursor.fetchall()}
    inserted = []
    for item in parsed:
        pk = stored.get(item.row.event_key)
        if pk is not None:
            item.row.pk = pk
            item.row._state.adding = False
            item.row._state.db = connection.alias
            inserted.append(item)
    return inserted


def _insert_new_with_orm(esp: str, parsed: list[_Parsed]) -> list[_Parsed]:
    """The same through the ORM (databases other than PostgreSQL, where SQLite lets one
    transaction write at a time)."""
    keys = [item.row.event_key for item in parsed]
    seen = set(
        TrackingEvent.objects.filter(esp=esp, event_key__in=keys).values_list(
            "event_key", flat=True
        )
    )
    parsed = [item for item in parsed if item.row.event_key not in seen]
    if not parsed:
        return []
    TrackingEvent.objects.bulk_create([item.row for item in parsed], ignore_conflicts=True)
    stored = dict(
        TrackingEvent.objects.filter(
            esp=esp, event_key__in=[item.row.event_key for item in parsed]
        ).values_list("event_key", "id")
    )
    for item in parsed:
        item.row.pk = stored.get(item.row.event_key)
    return parsed


@transaction.atomic
def esp_events_record(*, esp: str, events: Sequence[AnymailTrackingEvent]) -> list[TrackingEvent]:
    """Store an ESP webhook's events once each, link them to their emails, record the emails'
    first delivery/open/click/bounce/complaint, add the suppressions they call for and send the
    clients' outbound webhooks; returns the events stored by this call (a replayed event, or
    one a concurrent delivery of the same webhook stored, is not stored again, nor returned,
    nor acted on)."""
    parsed = _parse(esp, events, timezone.now())
    if not parsed:
        return []
    linked = _link(parsed)
    parsed = _insert_new(esp, parsed)
    if not parsed:
        return []
    rows = [item.row for item in parsed]
    _fates_update(rows)
    suppressions_add(entries=_suppressions(parsed, linked))
    webhooks_dispatch(rows, emails={email.pk: email for email in linked.values()})
    return rows
