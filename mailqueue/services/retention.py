"""Retention and erasure: purge old content and old emails in bounded batches, and export or
erase everything stored about one address (GDPR).

Each batch is one short transaction of at most MAILQUEUE_RETENTION_BATCH_SIZE rows, so a purge
never holds locks on the email tables for long, and a purge stopped half-way loses nothing.
"""

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.forms.models import model_to_dict
from django.utils import timezone

from mailqueue import conf
from mailqueue.errors import ValidationFailed
from mailqueue.models import (
    CapturedMessage,
    DeliveryAttempt,
    EmailAttachment,
    EmailJob,
    EmailStatus,
    IdempotencyRecord,
    Suppression,
)
from mailqueue.selectors.suppressions import address_hash
from mailqueue.validation import address_spec
from otp.selectors import codes_of_address
from topics.selectors import subscribers_of_address
from tracking.models import TrackedLink, TrackingEvent

logger = logging.getLogger(__name__)

# Emails that will not change any more: only these are ever purged.
FINISHED = (EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELLED, EmailStatus.SUPPRESSED)
# The README promises tracked links work this long; full retention never deletes them earlier.
TRACKED_LINKS_KEPT_DAYS = 60


@dataclass
class PurgeResult:
    """What one purge did (or, in a dry run, would do)."""

    contents_dropped: int = 0
    attachments_deleted: int = 0
    emails_deleted: int = 0
    captured_messages_deleted: int = 0
    idempotency_records_deleted: int = 0

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


@dataclass
class ErasureResult:
    """What erasing one address removed."""

    emails_deleted: int = 0
    events_deleted: int = 0
    captured_messages_deleted: int = 0
    suppressions_hashed: int = 0
    subscribers_deleted: int = 0
    codes_deleted: int = 0

    def __str__(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


def retention_purge(*, dry_run: bool = False, now: datetime | None = None) -> PurgeResult:
    """Apply MAILQUEUE_RETENTION_CONTENT_DAYS and MAILQUEUE_RETENTION_DAYS (both off unless set)."""
    now = now or timezone.now()
    result = PurgeResult()
    content_days = conf.retention_content_days()
    if content_days is not None:
        _drop_contents(now - timedelta(days=content_days), result, dry_run=dry_run)
    days = conf.retention_days()
    if days is not None:
        cutoff = now - timedelta(days=days)
        links_cutoff = min(cutoff, now - timedelta(days=TRACKED_LINKS_KEPT_DAYS))
        _delete_emails(cutoff, links_cutoff, result, dry_run=dry_run)
        captured = CapturedMessage.objects.filter(created_at__lt=cutoff)
        result.captured_messages_deleted = delete_in_batches(captured, dry_run=dry_run)
        expired = IdempotencyRecord.objects.filter(
            created_at__lt=now - timedelta(hours=conf.idempotency_ttl_hours())
        )
        result.idempotency_records_deleted = delete_in_batches(expired, dry_run=dry_run)
    if content_days is not None or days is not None:
        logger.info("retention purge%s: %s", " (dry run)" if dry_run else "", result)
    return result


def _drop_contents(cutoff: datetime, result: PurgeResult, *, dry_run: bool) -> None:
    # The subject stays: it is metadata the lists and the timeline show, like the recipients.
    with_content = EmailJob.objects.filter(
        Q(status__in=FINISHED, created_at__lt=cutoff),
        ~Q(html="") | ~Q(text="") | ~Q(context={}) | Exists(_attachments_of(OuterRef("pk"))),
    )
    if dry_run:
        result.contents_dropped = with_content.count()
        result.attachments_deleted = EmailAttachment.objects.filter(
            email__status__in=FINISHED, email__created_at__lt=cutoff
        ).count()
        return
    for ids in _batches_of_ids(with_content):
        with transaction.atomic():
            result.contents_dropped += EmailJob.objects.filter(pk__in=ids).update(
                html="", text="", context={}
            )
            deleted, _ = EmailAttachment.objects.filter(email_id__in=ids).delete()
            result.attachments_deleted += deleted


def _batches_of_ids(queryset: QuerySet) -> Iterator[list[Any]]:
    """The primary keys of `queryset`, MAILQUEUE_RETENTION_BATCH_SIZE at a time, in key order.

    Each batch starts after the last key of the previous one, so no query walks again over the
    rows (or dead tuples) that earlier batches already handled: the time per batch stays flat.
    """
    size = conf.retention_batch_size()
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:size])
    while ids:
        yield ids
        if len(ids) < size:
            return
        ids = list(
            queryset.filter(pk__gt=ids[-1]).order_by("pk").values_list("pk", flat=True)[:size]
        )


def _attachments_of(email_id: Any) -> QuerySet[EmailAttachment]:
    return EmailAttachment.objects.filter(email_id=email_id)


def _delete_emails(
    cutoff: datetime, links_cutoff: datetime, result: PurgeResult, *, dry_run: bool
) -> None:
    old = EmailJob.objects.filter(status__in=FINISHED, created_at__lt=cutoff).filter(
        Q(created_at__lt=links_cutoff)
        | ~Exists(TrackedLink.objects.filter(email_id=OuterRef("pk")))
    )
    result.emails_deleted = delete_in_batches(old, dry_run=dry_run)


def delete_in_batches(queryset: QuerySet, *, dry_run: bool = False) -> int:
    """Delete the rows of `queryset` (their CASCADE children too), one transaction per batch of
    MAILQUEUE_RETENTION_BATCH_SIZE; returns how many rows of the queryset's own model went (in
    a dry run, would go)."""
    if dry_run:
        return queryset.count()
    model = queryset.model
    deleted = 0
    for ids in _batches_of_ids(queryset):
        with transaction.atomic():
            _, per_model = model.objects.filter(pk__in=ids).delete()
        deleted += per_model.get(model._meta.label, 0)
    return deleted


# --- One address (GDPR) ---------------------------------------------------------------------


def _checked_spec(address: str) -> str:
    spec = address_spec(address)
    if not spec or "@" not in spec:
        raise ValidationFailed("Must be an email address.", field="address")
    return spec


def _emails_of(spec: str) -> QuerySet[EmailJob]:
    """Every email that has `spec` among its to, cc or bcc, across clients."""
    # `to_addresses` is indexed (GIN); cc and bcc hold raw addresses, so the text match finds
    # candidates and `_names_address` confirms them (a rare operator request may scan).
    candidates = EmailJob.objects.annotate(
        cc_text=Cast("cc", TextField()), bcc_text=Cast("bcc", TextField())
    ).filter(Q(cc_text__icontains=spec) | Q(bcc_text__icontains=spec))
    confirmed = [
        pk
        for pk, cc, bcc in candidates.values_list("pk", "cc", "bcc")
        if _names_address([*cc, *bcc], spec)
    ]
    return EmailJob.objects.filter(Q(to_addresses__contains=[spec]) | Q(pk__in=confirmed))


def _names_address(addresses: list[str], spec: str) -> bool:
    return any(address_spec(address) == spec for address in addresses)


def _captures_of(spec: str, email_ids: list[Any]) -> QuerySet[CapturedMessage]:
    candidates = CapturedMessage.objects.annotate(to_text=Cast("to", TextField())).filter(
        to_text__icontains=spec
    )
    confirmed = [pk for pk, to in candidates.values_list("pk", "to") if _names_address(to, spec)]
    return CapturedMessage.objects.filter(Q(email_id__in=email_ids) | Q(pk__in=confirmed))


def _suppressions_of(spec: str) -> QuerySet[Suppression]:
    return Suppression.objects.filter(address=spec)


def recipient_data_export(*, address: str) -> dict[str, Any]:
    """Everything stored about an address, across clients: emails (with content, attempts and
    events), events not linked to an email, captured messages, suppressions, topic
    subscriptions and one-time codes (without their hashes)."""
    spec = _checked_spec(address)
    emails = list(_emails_of(spec).order_by("created_at", "pk"))
    email_ids = [email.pk for email in emails]
    attempts: dict[Any, list[dict]] = {}
    for attempt in DeliveryAttempt.objects.filter(email_id__in=email_ids):
        attempts.setdefault(attempt.email_id, []).append(_row(attempt, exclude=("email",)))
    events: dict[Any, list[dict]] = {}
    for event in TrackingEvent.objects.filter(email_id__in=email_ids):
        events.setdefault(event.email_id, []).append(_row(event, exclude=("email",)))
    attachments: dict[Any, list[dict]] = {}
    for attachment in EmailAttachment.objects.filter(email_id__in=email_ids).defer("content"):
        attachments.setdefault(attachment.email_id, []).append(
            {"filename": attachment.filename, "mimetype": attachment.mimetype}
        )
    return {
        "address": spec,
        "emails": [
            {
                **_row(email, exclude=("claim_token",)),
                "attachments": attachments.get(email.pk, []),
                "attempts": attempts.get(email.pk, []),
                "events": events.get(email.pk, []),
            }
            for email in emails
        ],
        "unlinked_events": [
            _row(event, exclude=("email",))
            for event in TrackingEvent.objects.filter(email__isnull=True, recipient__iexact=spec)
        ],
        "captured_messages": [_row(m) for m in _captures_of(spec, email_ids).order_by("pk")],
        "suppressions": [_row(entry) for entry in _suppressions_of(spec).order_by("pk")],
        "subscriptions": [
            {
                **_row(subscriber, exclude=("topic",)),
                "client": subscriber.topic.client.name,
                "topic": subscriber.topic.slug,
            }
            for subscriber in subscribers_of_address(address=spec)
        ],
        # Codes are stored only as a keyed hash: what is kept about them, never the hash.
        "one_time_codes": [
            _row(code, exclude=("code_hash", "client")) | {"client_id": code.client_id}
            for code in codes_of_address(address=spec)
        ],
    }


def _row(instance: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    data = model_to_dict(instance, exclude=list(exclude))
    for name in ("id", "created_at", "updated_at"):
        if hasattr(instance, name) and name not in exclude:
            data[name] = getattr(instance, name)
    return data


def recipient_data_erase(*, address: str) -> ErasureResult:
    """Delete every email, event, captured message, subscription and one-time code of an
    address, across clients, and keep its suppressions only as a hash, so the address stays
    suppressed."""
    spec = _checked_spec(address)
    result = ErasureResult()
    with transaction.atomic():
        email_ids = list(_emails_of(spec).values_list("pk", flat=True))
        result.captured_messages_deleted, _ = _captures_of(spec, email_ids).delete()
        _, per_model = EmailJob.objects.filter(pk__in=email_ids).delete()
        result.emails_deleted = per_model.get(EmailJob._meta.label, 0)
        unlinked, _ = TrackingEvent.objects.filter(
            email__isnull=True, recipient__iexact=spec
        ).delete()
        result.events_deleted = per_model.get(TrackingEvent._meta.label, 0) + unlinked
        result.suppressions_hashed = _suppressions_hash(spec)
        result.subscribers_deleted, _ = subscribers_of_address(address=spec).delete()
        result.codes_deleted, _ = codes_of_address(address=spec).delete()
    logger.info("erased one address's data: %s", result)
    return result


def _suppressions_hash(spec: str) -> int:
    hashed = address_hash(spec)
    hashed_count = 0
    for entry in _suppressions_of(spec):
        # The hashed twin may already exist (the address was erased before and added again).
        twin = Suppression.objects.filter(
            address=hashed, client_id=entry.client_id, topic=entry.topic, reason=entry.reason
        )
        if twin.exists():
            entry.delete()
        else:
            Suppression.objects.filter(pk=entry.pk).update(address=hashed, source_event=None)
        hashed_count += 1
    return hashed_count
