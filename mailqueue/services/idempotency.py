"""Idempotency-Key handling: the first response is stored and replayed for repeats."""

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from mailqueue import conf
from mailqueue.errors import IdempotencyConflict, IdempotencyMismatch, ValidationFailed
from mailqueue.models import Client, IdempotencyRecord

# A record still "in progress" after this long belongs to a request that died; take it over.
ABANDONED_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class StoredResponse:
    """A response to replay."""

    status: int
    body: dict
    location: str


def request_fingerprint(*, method: str, path: str, body: object) -> str:
    """SHA-256 of the method, path and canonical JSON body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def idempotency_begin(
    *, client: Client, key: str, fingerprint: str
) -> tuple[IdempotencyRecord | None, StoredResponse | None]:
    """Reserve a key (committed at once, so a concurrent duplicate sees it) or find its response.

    Returns (record, None) when the caller should do the work, or (None, stored) to replay.
    Raises IdempotencyConflict (409) while the first request is still running and
    IdempotencyMismatch (422) when the key was used with a different body.
    """
    if not key.strip() or len(key) > 255:
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 characters, not only spaces.",
            field="Idempotency-Key",
        )
    now = timezone.now()
    cutoff = now - timedelta(hours=conf.idempotency_ttl_hours())
    for _ in range(2):
        try:
            # Outside a transaction the INSERT commits on its own; inside one, a savepoint
            # keeps a duplicate key from breaking the caller's transaction.
            with (
                transaction.atomic()
                if transaction.get_connection().in_atomic_block
                else nullcontext()
            ):
                record = IdempotencyRecord.objects.create(
                    client=client, key=key, request_hash=fingerprint, created_at=now
                )
            return record, None
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(client=client, key=key).first()
            if existing is None:
                continue  # deleted between our insert and our read: try again
            expired = existing.created_at < cutoff
            abandoned = (
                existing.response_status is None and existing.created_at < now - ABANDONED_AFTER
            )
            if expired or abandoned:
                IdempotencyRecord.objects.filter(pk=existing.pk).delete()
                continue
            if existing.request_hash != fingerprint:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was already used with a different request body.",
                    field="Idempotency-Key",
                ) from None
            if existing.response_status is None:
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still being processed.",
                    field="Idempotency-Key",
                ) from None
            return None, StoredResponse(
                status=existing.response_status,
                body=existing.response_body,
                location=existing.response_location,
            )
    raise IdempotencyConflict("Idempotency-Key is contended; try again.", field="Idempotency-Key")


def idempotency_complete(
    *, record: IdempotencyRecord, status: int, body: dict, location: str = ""
) -> None:
    """Store the response; call inside the transaction that did the work."""
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        response_status=status, response_body=body, response_location=location
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    """Forget a reservation whose request failed, so the client may fix it and try again."""
    IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()
