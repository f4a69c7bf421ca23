"""Idempotency-Key handling: the first response is stored and replayed for repeats."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from mailqueue import conf
from mailqueue.errors import IdempotencyConflict, IdempotencyMismatch, ValidationFailed
from mailqueue.models import Client, IdempotencyRecord

# How long a repeat waits for the first request with its key to end before answering 409.
LOCK_WAIT_MS = 5000
LOCK_NOT_AVAILABLE = "55P03"
# A pending record (written by an earlier version, which reserved keys before the work) still
# "in progress" after this long belongs to a request that died; take it over.
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


def _check_key(key: str) -> None:
    if not key.strip() or len(key) > 255:
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 characters, not only spaces.",
            field="Idempotency-Key",
        )


def _stored(existing: IdempotencyRecord, fingerprint: str, now) -> StoredResponse | None:
    """The answer to replay for a key already recorded, or None when the record is stale and
    was deleted (the caller then tries again)."""
    expired = existing.created_at < now - timedelta(hours=conf.idempotency_ttl_hours())
    # Only records written before reservations moved into the work's transaction can be
    # pending: one whose request died long ago must not block its key forever.
    abandoned = existing.response_status is None and existing.created_at < now - ABANDONED_AFTER
    if expired or abandoned:
        IdempotencyRecord.objects.filter(pk=existing.pk).delete()
        return None
    if existing.request_hash != fingerprint:
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used with a different request body.",
            field="Idempotency-Key",
        )
    if existing.response_status is None:
        raise IdempotencyConflict(
            "A request with this Idempotency-Key is still being processed.",
            field="Idempotency-Key",
        )
    return StoredResponse(
        status=existing.response_status,
        body=existing.response_body,
        location=existing.response_location,
    )


def _limit_lock_wait() -> None:
    """A repeat waits at most LOCK_WAIT for the first request's transaction (PostgreSQL)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")


def idempotency_run(
    *,
    client: Client,
    key: str,
    fingerprint: str,
    work: Callable[[], StoredResponse],
    test: bool = False,
) -> tuple[StoredResponse, bool]:
    """Do `work` once per client and key; return its answer and whether it was a replay.

    The key's record is written in the work's own transaction, with the answer. A concurrent
    repeat waits on the record's unique index until the first request ends, then replays its
    answer (or, if the first failed, does the work itself); a request that fails, or whose
    database goes away mid-way, leaves nothing behind, so its key never blocks a retry. Raises
    IdempotencyMismatch (422) when the key was used with a different body. A test key's keys
    (`test`) are kept apart: a live request never replays a simulated answer.
    """
    _check_key(key)
    if test:
        key = f"test:{key if len(key) <= 250 else hashlib.sha256(key.encode()).hexdigest()}"
    for _ in range(3):
        now = timezone.now()
        with transaction.atomic():
            _limit_lock_wait()
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        client=client, key=key, request_hash=fingerprint, created_at=now
                    )
            except OperationalError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                # The first request with this key is still running after LOCK_WAIT: the
                # client retries (409) rather than holding a connection here for longer.
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still being processed.",
                    field="Idempotency-Key",
                ) from None
            except IntegrityError:
                existing = IdempotencyRecord.objects.filter(client=client, key=key).first()
                stored = _stored(existing, fingerprint, now) if existing is not None else None
                if stored is not None:
                    return stored, True
                continue  # deleted meanwhile, or stale: insert again
            answer = work()
            IdempotencyRecord.objects.filter(pk=record.pk).update(
                response_status=answer.status,
                response_body=answer.body,
                response_location=answer.location,
            )
            return answer, False
    raise IdempotencyConflict("Idempotency-Key is contended; try again.", field="Idempotency-Key")
