"""Writes of outbound webhooks: endpoints, dispatching events as deliveries, attempting them.

`webhooks_dispatch(events)` is the one entry point for code that records events: it is called
with the events just written (by the worker's outcome groups and by `tracking.services`), and
turns those that an active endpoint of the email's client wants into `webhook_deliveries` rows
(one INSERT) and one RQ job on the `webhooks` queue.
"""

import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import django_rq
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from client_webhooks import selectors
from client_webhooks.addresses import webhook_target
from client_webhooks.errors import UnsafeWebhookUrl
from client_webhooks.http import WebhookAnswer, webhook_post
from client_webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from mailqueue import conf, scheduling
from mailqueue.db import column_list, json_dumps, json_recordset, json_rows, server_binding_cursor
from mailqueue.errors import ValidationFailed
from mailqueue.models import Client, EmailJob
from mailqueue.priorities import WEBHOOKS

logger = logging.getLogger(__name__)

DELIVER_FUNC = "client_webhooks.tasks.deliver_webhooks"
JOB_TIMEOUT_SECONDS = 900
MAX_ENDPOINTS_PER_CLIENT = 20
SIGNATURE_HEADER = "Mailqueue-Signature"
# Delays before the 2nd, 3rd, ... attempt (about 27 hours in all, then the delivery fails).
RETRY_DELAYS_SECONDS = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
# Deliveries a single job attempts (a replay of thousands is split into jobs of this size):
# few enough that even calls that all run into their deadline, after a slow DNS lookup each,
# end well within JOB_TIMEOUT_SECONDS (10 x (10 s + up to 30 s) = 400 s < 900 s).
JOB_CHUNK_SIZE = 10
# How long a job's claim on a delivery lasts at least: longer than any one call (DNS lookup and
# http.DEADLINE_SECONDS), so no second job sends it while the first is still waiting.
CLAIM_SECONDS = 60
# The event fields sent in `data` besides the event's own data, when they are set.
_EVENT_DATA_FIELDS = (
    "recipient",
    "description",
    "provider",
    "esp",
    "reject_reason",
    "mta_response",
    "click_url",
    "user_agent",
)


# --- Endpoints ---------------------------------------------------------------------------------


def webhook_endpoint_create(*, client: Client, url: str, events: list[str]) -> WebhookEndpoint:
    """Register an endpoint with a new signing secret; UnsafeWebhookUrl (400) for a URL we must
    not call."""
    _url_check(url)
    if WebhookEndpoint.objects.filter(client=client).count() >= MAX_ENDPOINTS_PER_CLIENT:
        raise ValidationFailed(f"A client may have at most {MAX_ENDPOINTS_PER_CLIENT} endpoints.")
    endpoint = WebhookEndpoint.objects.create(
        client=client, url=url, events=events, secret=f"whsec_{secrets.token_urlsafe(32)}"
    )
    selectors.webhook_subscriptions_forget()
    return endpoint


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's URL, events or state; turning it on again clears its failures."""
    if url is not None:
        _url_check(url)
        endpoint.url = url
    if events is not None:
        endpoint.events = events
    if active is True and not endpoint.active:
        endpoint.consecutive_failures = 0
        endpoint.disabled_at = None
    if active is not None:
        endpoint.active = active
    endpoint.save(update_fields=["url", "events", "active", "consecutive_failures", "disabled_at"])
    selectors.webhook_subscriptions_forget()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint with its deliveries and their attempts."""
    endpoint.delete()
    selectors.webhook_subscriptions_forget()


def _url_check(url: str) -> None:
    allow_private = conf.webhook_allow_private()
    # With private addresses allowed any address is fine: only the URL's shape is checked.
    webhook_target(url, allow_private=allow_private, resolve=not allow_private)


# --- Dispatch ----------------------------------------------------------------------------------


@dataclass
class _Event:
    email_id: Any
    event_type: str
    occurred_at: datetime | None
    data: dict = field(default_factory=dict)


def _event_of(event: object) -> _Event:
    """The fields dispatch needs from a TrackingEvent, a tracking NewEvent or a dict."""
    get = event.get if isinstance(event, Mapping) else lambda name: getattr(event, name, None)
    extra = {name: get(name) for name in _EVENT_DATA_FIELDS if get(name)}
    return _Event(
        email_id=get("email_id"),
        event_type=get("event_type") or get("type") or "",
        occurred_at=get("occurred_at"),
        data={**extra, **(get("data") or {})},
    )


def webhooks_dispatch(
    events: Iterable[object], *, emails: Mapping[Any, EmailJob] | None = None
) -> int:
    """Create a delivery per event and active endpoint that wants it, and enqueue them after the
    commit (one INSERT, one job); return how many deliveries were created.

    `events`: TrackingEvent rows, tracking NewEvents or dicts (email_id, event_type or type,
    occurred_at, data, recipient, ...). `emails`: the events' emails when the caller has them
    loaded (the worker does), which saves a query. Costs nothing while no client has an active
    endpoint (this process's copy of the endpoints is up to 5 s old, see selectors), and no
    query for events of clients without one when `emails` is given.
    """
    subscriptions = selectors.webhook_subscriptions()
    if not subscriptions:
        return 0
    known = dict(emails or {})
    candidates = []
    for raw in events:
        event = _event_of(raw)
        email = known.get(event.email_id)
        if event.email_id is not None and (email is None or email.client_id in subscriptions):
            candidates.append(event)
    missing = {event.email_id for event in candidates if event.email_id not in known}
    if missing:
        fields = ("id", "client_id", "to", "tags", "metadata", "batch_id")
        known.update(EmailJob.objects.only(*fields).in_bulk(list(missing)))
    now = timezone.now()
    rows = []
    for event in candidates:
        email = known.get(event.email_id)
        if email is None:
            continue
        wanted = [
            endpoint_id
            for endpoint_id, types in subscriptions.get(email.client_id, ())
            if "*" in types or event.event_type in types
        ]
        if not wanted:
            continue
        event_id = uuid.uuid4()
        payload = _payload(event_id, event, email, now)
        rows.extend(
            WebhookDelivery(
                endpoint_id=endpoint_id,
                event_id=event_id,
                event_type=event.event_type,
                payload=payload,
                next_attempt_at=now,
                created_at=now,
            )
            for endpoint_id in wanted
        )
    if not rows:
        return 0
    ids = _deliveries_insert(rows)
    if ids:
        webhook_deliveries_enqueue_on_commit(ids)
    return len(ids)


def _payload(event_id: uuid.UUID, event: _Event, email: EmailJob, now: datetime) -> dict:
    """The JSON body of one event, as the client's application receives it."""
    occurred_at = event.occurred_at or now
    # Through our encoder and back: UUIDs and datetimes in the event's data become strings.
    return json.loads(
        json_dumps(
            {
                "id": str(event_id),
                "type": event.event_type,
                "created_at": occurred_at.isoformat(),
                "email": {
                    "id": str(email.pk),
                    "to": email.to,
                    "tags": email.tags,
                    "metadata": email.metadata,
                    "batch": str(email.batch_id) if email.batch_id else None,
                },
                "data": event.data,
            }
        )
    )


def _deliveries_insert(rows: list[WebhookDelivery]) -> list[int]:
    """INSERT the deliveries whose endpoint still exists and is active, in one statement; their
    ids. (This process's copy of the endpoints may be a few seconds old.)"""
    if connection.vendor != "postgresql":
        active = set(
            WebhookEndpoint.objects.filter(
                pk__in={row.endpoint_id for row in rows}, active=True
            ).values_list("pk", flat=True)
        )
        created = WebhookDelivery.objects.bulk_create(
            [row for row in rows if row.endpoint_id in active]
        )
        return [row.pk for row in created]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(WebhookDelivery._meta.db_table)} {column_list(WebhookDelivery)} "  # noqa: S608
        f"SELECT new_row.* FROM {json_recordset(WebhookDelivery, 'new_row')} "
        f"WHERE EXISTS (SELECT 1 FROM {quote(WebhookEndpoint._meta.db_table)} AS endpoint "
        "WHERE endpoint.id = new_row.endpoint_id AND endpoint.active) RETURNING id"
    )
    with server_binding_cursor() as cursor:
        cursor.execute(sql, [json_dumps(json_rows(WebhookDelivery, rows))])
        return [row[0] for row in cursor.fetchall()]


# --- Jobs --------------------------------------------------------------------------------------


def webhook_deliveries_enqueue(delivery_ids: list[int], *, run_at: datetime | None = None) -> None:
    """Put jobs for these deliveries on the `webhooks` queue, or in the scheduler until `run_at`
    (raises RedisError if Redis is unreachable)."""
    redis = scheduling.connection()
    for start in range(0, len(delivery_ids), JOB_CHUNK_SIZE):
        chunk = delivery_ids[start : start + JOB_CHUNK_SIZE]
        options = {
            "job_timeout": JOB_TIMEOUT_SECONDS,
            "result_ttl": scheduling.RESULT_TTL_SECONDS,
            "failure_ttl": scheduling.FAILURE_TTL_SECONDS,
            "description": f"deliver {len(chunk)} webhook(s)",
        }
        if run_at is None:
            django_rq.get_queue(WEBHOOKS, connection=redis).enqueue(DELIVER_FUNC, chunk, **options)
        else:
            scheduling.get_scheduler(connection=redis).enqueue_at(
                run_at,
                DELIVER_FUNC,
                chunk,
                queue_name=WEBHOOKS,
                timeout=JOB_TIMEOUT_SECONDS,
                job_result_ttl=scheduling.RESULT_TTL_SECONDS,
                job_description=options["description"],
            )


# A pending delivery this late has lost its job (Redis flushed, or down when it was enqueued).
LOST_AFTER_SECONDS = 300


def webhook_deliveries_requeue_lost(*, limit: int = 5000) -> int:
    """Enqueue again the pending deliveries overdue by more than LOST_AFTER_SECONDS (the
    sweeper's pass); returns how many. Their due time moves to now, so the next pass leaves
    them alone while the new job runs."""
    now = timezone.now()
    ids = list(
        WebhookDelivery.objects.filter(
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at__lt=now - timedelta(seconds=LOST_AFTER_SECONDS),
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    if ids:
        WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at=now)
        webhook_deliveries_enqueue(ids)
    return len(ids)


def webhook_deliveries_enqueue_on_commit(delivery_ids: list[int]) -> None:
    """Enqueue the deliveries' job after the current transaction commits (logged if Redis is
    down: the deliveries stay pending, and an admin replay sends them)."""

    def _enqueue() -> None:
        try:
            webhook_deliveries_enqueue(delivery_ids)
        except RedisError as exc:
            logger.warning("enqueue of %d webhook deliveries failed: %s", len(delivery_ids), exc)

    transaction.on_commit(_enqueue)


# --- Attempts ----------------------------------------------------------------------------------


def webhook_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """The Mailqueue-Signature header: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _attempt(delivery: WebhookDelivery) -> WebhookAnswer:
    """POST one delivery to its endpoint, after checking the address it resolves to now."""
    endpoint = delivery.endpoint
    try:
        target = webhook_target(endpoint.url, allow_private=conf.webhook_allow_private())
    except UnsafeWebhookUrl as exc:
        return WebhookAnswer(None, "", f"refused: {exc.message}", 0)
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Mailqueue-Webhooks/1",
        SIGNATURE_HEADER: webhook_signature(
            secret=endpoint.secret, body=body, timestamp=int(time.time())
        ),
    }
    return webhook_post(target=target, body=body, headers=headers)


def webhook_deliveries_attempt(*, delivery_ids: list[int]) -> dict[str, int]:
    """Attempt the pending deliveries among the ids once each; log each attempt, schedule the
    retries, disable endpoints that failed too often in a row. Returns counts per outcome.

    Only deliveries that are due: a second job for a delivery (the sweeper re-enqueued it while
    its first job was only late) finds it done, waiting for its retry or claimed by the first
    job, and does nothing. Each delivery is claimed before its call and its outcome written
    right after it, so a job stopped halfway (RQ's timeout, a killed worker) keeps what it did,
    and the sweeper sends the rest once they are overdue.
    """
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    pending = WebhookDelivery.objects.filter(
        due, pk__in=delivery_ids, status=WebhookDeliveryStatus.PENDING
    )
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    retries: dict[int, list[int]] = {}
    # Endpoints this job disabled: their remaining deliveries fail without a call.
    disabled: set = set()
    for delivery in pending.select_related("endpoint").order_by("id"):
        if not _delivery_claim(delivery):
            continue
        if not delivery.endpoint.active or delivery.endpoint_id in disabled:
            answer = WebhookAnswer(None, "", "endpoint disabled", 0)
            _attempt_record(delivery, answer, called=False)
            counts["failed"] += 1
            continue
        answer = _attempt(delivery)
        # The attempt, the delivery's state and the endpoint's count together, or none of them.
        with transaction.atomic():
            delay = _attempt_record(delivery, answer)
            if _endpoint_count(delivery.endpoint_id, succeeded=answer.ok):
                disabled.add(delivery.endpoint_id)
        if answer.ok:
            counts["delivered"] += 1
        elif delay is None:
            counts["failed"] += 1
        else:
            retries.setdefault(delay, []).append(delivery.pk)
            counts["retrying"] += 1
    for delay, ids in retries.items():
        # Up to a tenth later, so many deliveries that failed together do not retry together.
        # (Retries of a job stopped before this point are sent by the sweeper.)
        run_at = timezone.now() + timedelta(seconds=delay * (1 + random.random() / 10))
        try:
            webhook_deliveries_enqueue(ids, run_at=run_at)
        except RedisError as exc:
            logger.warning("retry of %d webhook deliveries not scheduled: %s", len(ids), exc)
    return counts


def _delivery_claim(delivery: WebhookDelivery) -> bool:
    """Move a due delivery's next attempt past the call about to be made (to when its retry
    would be); False when another job got to it first.

    Should the job stop during the call, the delivery waits as if the attempt had failed, then
    the sweeper sends it again, instead of being re-enqueued with its whole job at once.
    """
    now = timezone.now()
    delay = RETRY_DELAYS_SECONDS[min(delivery.attempts, len(RETRY_DELAYS_SECONDS) - 1)]
    claimed_until = now + timedelta(seconds=max(delay, CLAIM_SECONDS))
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    return bool(
        WebhookDelivery.objects.filter(
            due,
            pk=delivery.pk,
            status=WebhookDeliveryStatus.PENDING,
            attempts=delivery.attempts,
        ).update(next_attempt_at=claimed_until)
    )


def _attempt_record(
    delivery: WebhookDelivery, answer: WebhookAnswer, *, called: bool = True
) -> int | None:
    """Write one attempt and where the delivery now stands, in one transaction; the delay
    before its retry, or None when it is delivered or failed for good. Without `called` (its
    endpoint is disabled) the delivery fails without using up an attempt."""
    now = timezone.now()
    attempts = delivery.attempts + 1 if called else delivery.attempts
    delay = None
    if answer.ok:
        update = {"status": WebhookDeliveryStatus.DELIVERED, "delivered_at": now}
        update["next_attempt_at"] = None
    elif not called or attempts >= MAX_ATTEMPTS:
        update = {"status": WebhookDeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        delay = RETRY_DELAYS_SECONDS[attempts - 1]
        update = {"next_attempt_at": now + timedelta(seconds=delay)}
    with transaction.atomic():
        # Still the attempt this job claimed (a replay in between starts a new series).
        WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDeliveryStatus.PENDING, attempts=delivery.attempts
        ).update(attempts=attempts, **update)
        WebhookAttempt.objects.create(
            delivery=delivery,
            status_code=answer.status_code,
            duration_ms=answer.duration_ms,
            response_excerpt=answer.excerpt,
            error=answer.error,
            created_at=now,
        )
    return delay


def _endpoint_count(endpoint_id: Any, *, succeeded: bool) -> bool:
    """Count an endpoint's failures in a row (a success resets them) and disable it after too
    many; whether it was disabled now."""
    endpoints = WebhookEndpoint.objects.filter(pk=endpoint_id)
    if succeeded:
        endpoints.exclude(consecutive_failures=0).update(consecutive_failures=0)
        return False
    endpoints.update(consecutive_failures=F("consecutive_failures") + 1)
    disabled = endpoints.filter(
        active=True, consecutive_failures__gte=conf.webhook_disable_after()
    ).update(active=False, disabled_at=timezone.now())
    if disabled:
        logger.warning("a webhook endpoint was disabled after repeated failures")
        selectors.webhook_subscriptions_forget()
    return bool(disabled)


# --- Replays -----------------------------------------------------------------------------------


def webhook_deliveries_replay(
    *, delivery_ids: Iterable[int] | None = None, since: datetime | None = None
) -> int:
    """Send deliveries again (the ones named, or every one created since a time), whatever they
    came to; return how many were queued."""
    if delivery_ids is None and since is None:
        raise ValidationFailed("Name the deliveries or a time to replay from.")
    queryset = WebhookDelivery.objects.all()
    if delivery_ids is not None:
        queryset = queryset.filter(pk__in=list(delivery_ids))
    if since is not None:
        queryset = queryset.filter(created_at__gte=since)
    with transaction.atomic():
        ids = list(queryset.order_by("id").values_list("pk", flat=True))
        # A replay starts a fresh series of attempts (the earlier ones stay logged).
        WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        if ids:
            webhook_deliveries_enqueue_on_commit(ids)
    return len(ids)
