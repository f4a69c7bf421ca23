"""Reads: what the API and admin show. Every query is scoped to the calling client."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.db import connection
from django.db.models import Count, Max, Min, Prefetch, Q, QuerySet
from django.db.models.functions import TruncHour
from django.http import Http404
from django.utils import timezone
from redis.exceptions import RedisError

from mailqueue import scheduling
from mailqueue.models import Batch, Client, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.services.dead_letters import error_group_key, error_pattern
from mailqueue.validation import address_spec
from tracking.models import EventType, TrackingEvent


def recipient_q(address: str) -> Q:
    """Emails with this address among their To recipients."""
    spec = address_spec(address) or address.strip().lower()
    if connection.vendor == "postgresql":
        return Q(to_addresses__contains=[spec])  # jsonb containment, GIN-indexed
    # SQLite (local runs) has no JSON containment: match the quoted item in the JSON text.
    return Q(to_addresses__icontains=f'"{spec}"')


def tag_q(tag: str) -> Q:
    """Emails carrying a tag."""
    if connection.vendor == "postgresql":
        return Q(tags__contains=[tag])
    # SQLite (local runs) has no JSON containment: match the quoted item in the JSON text.
    return Q(tags__icontains=f'"{tag}"')


def email_list(
    *,
    client: Client,
    status: str | None = None,
    batch: UUID | None = None,
    to: str | None = None,
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[EmailJob]:
    """A client's emails, newest first, filtered."""
    queryset = EmailJob.objects.filter(client=client).select_related("template")
    if status:
        queryset = queryset.filter(status=status)
    if batch:
        queryset = queryset.filter(batch_id=batch)
    if to:
        queryset = queryset.filter(recipient_q(to))
    if tag:
        queryset = queryset.filter(tag_q(tag))
    if created_after:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before:
        queryset = queryset.filter(created_at__lt=created_before)
    return queryset


def email_get(*, client: Client, email_id: UUID | str, with_history: bool = False) -> EmailJob:
    """One of the client's emails, or 404 (another client's email is indistinguishable)."""
    queryset = EmailJob.objects.filter(client=client).select_related("template")
    if with_history:
        queryset = queryset.prefetch_related(
            Prefetch("events", queryset=TrackingEvent.objects.order_by("occurred_at", "id")),
            Prefetch(
                "delivery_attempts", queryset=DeliveryAttempt.objects.order_by("started_at", "id")
            ),
        )
    email = queryset.filter(pk=email_id).first()
    if email is None:
        raise Http404("No such email.")
    return email


def batch_get(*, client: Client, batch_id: UUID | str) -> Batch:
    """One of the client's batches, or 404."""
    batch = Batch.objects.filter(client=client, pk=batch_id).select_related("template").first()
    if batch is None:
        raise Http404("No such batch.")
    return batch


def batch_status_counts(*, batch: Batch) -> dict[str, int]:
    """How many of a batch's emails are in each status."""
    counts = {status: 0 for status in EmailStatus.values}
    rows = EmailJob.objects.filter(batch=batch).values("status").annotate(n=Count("pk")).order_by()
    for row in rows:
        counts[row["status"]] = row["n"]
    return counts


# --- Admin: one email's timeline ----------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One moment in an email's life, as the admin timeline shows it."""

    at: datetime
    kind: str
    title: str
    detail: str = ""
    # "ok", "error", "warning" or "info": how the admin colours the entry.
    tone: str = "info"


# Same instant, several entries (created and queued, say): show them in the order they happen.
_TIMELINE_RANK = {"created": 0, "scheduled": 1, "queued": 2, "due": 2, "attempt": 3}
_EVENT_TONES = {
    EventType.SENT: "ok",
    EventType.DELIVERED: "ok",
    EventType.FAILED: "error",
    EventType.REJECTED: "error",
    EventType.BOUNCED: "error",
    EventType.COMPLAINED: "error",
    EventType.DEFERRED: "warning",
    EventType.CANCELLED: "warning",
}
_ATTEMPT_TONES = {
    DeliveryAttempt.Outcome.SENT: "ok",
    DeliveryAttempt.Outcome.TRANSIENT: "warning",
    DeliveryAttempt.Outcome.PERMANENT: "error",
}


def email_get_for_timeline(*, email_id: UUID | str) -> EmailJob | None:
    """An email with whoever created it and the template version it used, or None."""
    return (
        EmailJob.objects.select_related(
            "client", "api_key", "created_by_user", "template", "template_version__template"
        )
        .filter(pk=email_id)
        .first()
    )


def email_origin(*, email: EmailJob) -> str:
    """Who asked for the email: an API key of a client, an admin user, or just the client."""
    if email.api_key_id:
        return f"API key mq_{email.api_key.prefix}_… (client {email.client.name})"
    if email.created_by_user_id:
        return f"admin user {email.created_by_user.get_username()} (client {email.client.name})"
    return f"client {email.client.name}"


def _attempt_entry(attempt: DeliveryAttempt) -> TimelineEntry:
    provider = attempt.provider or "no provider"
    detail = f"{attempt.duration_ms} ms"
    if attempt.error_class or attempt.error_message:
        detail += f" · {attempt.error_class or 'error'}: {attempt.error_message}"
    return TimelineEntry(
        at=attempt.started_at,
        kind="attempt",
        title=f"Attempt #{attempt.number} via {provider}: {attempt.get_outcome_display().lower()}",
        detail=detail,
        tone=_ATTEMPT_TONES.get(attempt.outcome, "info"),
    )


def _event_entry(event: TrackingEvent) -> TimelineEntry:
    title = event.get_event_type_display()
    if event.provider:
        title += f" ({event.provider})"
    parts = [event.description]
    if event.recipient:
        parts.append(f"recipient {event.recipient}")
    return TimelineEntry(
        at=event.occurred_at,
        kind=event.event_type,
        title=title,
        detail=" · ".join(part for part in parts if part),
        tone=_EVENT_TONES.get(event.event_type, "info"),
    )


def email_timeline(*, email: EmailJob, now: datetime | None = None) -> list[TimelineEntry]:
    """Everything that happened to an email, oldest first.

    Creation (and by whom), scheduling, queueing, each delivery attempt and every tracking event
    (sent, failed, cancelled, queued again by a retry, opens, bounces...).
    """
    now = now or timezone.now()
    entries = [
        TimelineEntry(
            at=email.created_at,
            kind="created",
            title="Created",
            detail=f"by {email_origin(email=email)}",
        )
    ]
    events = list(TrackingEvent.objects.filter(email=email).order_by("occurred_at", "id"))
    if email.send_at and email.send_at > email.created_at:
        entries.append(
            TimelineEntry(
                at=email.created_at,
                kind="scheduled",
                title=f"Scheduled for {email.send_at:%Y-%m-%d %H:%M:%S %Z}",
                detail=f"priority {email.priority}",
            )
        )
        cancelled_early = any(
            e.event_type == EventType.CANCELLED and e.occurred_at < email.send_at for e in events
        )
        if email.send_at <= now and not cancelled_early:
            entries.append(
                TimelineEntry(
                    at=email.send_at,
                    kind="due",
                    title="Send time reached: queued",
                    detail=f"priority {email.priority}",
                )
            )
    else:
        entries.append(
            TimelineEntry(
                at=email.created_at,
                kind="queued",
                title="Queued",
                detail=f"priority {email.priority}",
            )
        )
    attempts = DeliveryAttempt.objects.filter(email=email).order_by("started_at", "id")
    entries.extend(_attempt_entry(attempt) for attempt in attempts)
    entries.extend(_event_entry(event) for event in events)
    # Rows written without their event (imports, older versions): still show how it ended.
    seen = {event.event_type for event in events}
    final = {
        EmailStatus.SENT: (email.sent_at, "Sent", "ok"),
        EmailStatus.FAILED: (email.updated_at, "Failed", "error"),
        EmailStatus.CANCELLED: (email.updated_at, "Cancelled", "warning"),
    }.get(email.status)
    if final and email.status not in seen and final[0]:
        at, title, tone = final
        detail = email.last_error if email.status == EmailStatus.FAILED else ""
        entries.append(
            TimelineEntry(at=at, kind=email.status, title=title, detail=detail, tone=tone)
        )
    # A stable sort: entries of one kind at the same instant keep their row order.
    return sorted(entries, key=lambda entry: (entry.at, _TIMELINE_RANK.get(entry.kind, 9)))


# --- Admin: dead letters ------------------------------------------------------------------------

# More groups than this means something else is wrong; the page shows the biggest ones.
DEAD_LETTER_GROUPS_SHOWN = 200
# Retrying emails have no stored group key: their groups are computed from this many rows.
RETRYING_ROWS_EXAMINED = 5000


@dataclass(frozen=True)
class DeadLetterGroup:
    """Emails that failed (or keep failing) for the same reason."""

    key: str
    error_class: str
    pattern: str
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class RetryingGroups:
    """Retrying emails grouped by error, computed over the most recently updated rows."""

    groups: list[DeadLetterGroup]
    examined: int
    truncated: bool


def failed_emails_in_group(*, error_group: str) -> QuerySet[EmailJob]:
    """The failed emails of one dead-letter group (served by the partial index on failed rows)."""
    return EmailJob.objects.filter(status=EmailStatus.FAILED, error_group=error_group)


def dead_letter_groups(*, limit: int = DEAD_LETTER_GROUPS_SHOWN) -> list[DeadLetterGroup]:
    """Failed emails grouped by error, biggest group first, with when each group failed.

    One GROUP BY over the partial index on failed rows (key and time only, so an index-only
    scan), then one small query for a sample of each group: the row that failed last.
    """
    rows = list(
        EmailJob.objects.filter(status=EmailStatus.FAILED)
        .values("error_group")
        # COUNT(*), not COUNT(id): every column read is in the index.
        .annotate(count=Count("*"), first_seen=Min("updated_at"), last_seen=Max("updated_at"))
        .order_by("-count", "-last_seen", "error_group")[:limit]
    )
    if not rows:
        return []
    # (group, updated_at) pairs hit the partial index exactly: one probe per group.
    latest = Q()
    for row in rows:
        latest |= Q(error_group=row["error_group"], updated_at=row["last_seen"])
    samples: dict[str, dict] = {}
    for sample in (
        EmailJob.objects.filter(status=EmailStatus.FAILED)
        .filter(latest)
        .order_by()
        .values("error_group", "error_class", "last_error")
    ):
        samples.setdefault(sample["error_group"], sample)
    groups = []
    for row in rows:
        sample = samples.get(row["error_group"])
        if sample is None:
            # Its last row changed between the two queries (retried just now): any row will do.
            sample = (
                failed_emails_in_group(error_group=row["error_group"])
                .values("error_group", "error_class", "last_error")
                .first()
            ) or {"error_class": "", "last_error": ""}
        groups.append(
            DeadLetterGroup(
                key=row["error_group"],
                error_class=sample["error_class"],
                pattern=error_pattern(sample["last_error"]),
                count=row["count"],
                first_seen=row["first_seen"],
                last_seen=row["last_seen"],
            )
        )
    return groups


def dead_letter_group_get(*, error_group: str) -> DeadLetterGroup | None:
    """One dead-letter group by key (for the filtered email list's header), or None."""
    rows = failed_emails_in_group(error_group=error_group)
    summary = rows.aggregate(
        count=Count("*"), first_seen=Min("updated_at"), last_seen=Max("updated_at")
    )
    if not summary["count"]:
        return None
    sample = rows.order_by("-updated_at").values("error_class", "last_error").first() or {}
    return DeadLetterGroup(
        key=error_group,
        error_class=sample.get("error_class", ""),
        pattern=error_pattern(sample.get("last_error", "")),
        **summary,
    )


def _recent_retrying_rows(limit: int) -> list[dict]:
    # Served by the (status, updated_at) index: the newest retrying rows, never the whole table.
    return list(
        EmailJob.objects.filter(status=EmailStatus.RETRYING)
        .order_by("-updated_at")
        .values("pk", "error_class", "last_error", "updated_at")[:limit]
    )


def retrying_groups(*, limit_rows: int = RETRYING_ROWS_EXAMINED) -> RetryingGroups:
    """Emails still being retried, grouped by error class and message pattern, biggest first.

    Their group key is only stored when they fail for good, so it is computed here over at most
    `limit_rows` of the most recently updated retrying emails.
    """
    rows = _recent_retrying_rows(limit_rows + 1)
    truncated = len(rows) > limit_rows
    rows = rows[:limit_rows]
    grouped: dict[str, dict] = {}
    for row in rows:
        key = error_group_key(error_class=row["error_class"], message=row["last_error"])
        group = grouped.setdefault(
            key,
            {
                "key": key,
                "error_class": row["error_class"],
                "pattern": error_pattern(row["last_error"]),
                "count": 0,
                "first_seen": row["updated_at"],
                "last_seen": row["updated_at"],
            },
        )
        group["count"] += 1
        group["first_seen"] = min(group["first_seen"], row["updated_at"])
        group["last_seen"] = max(group["last_seen"], row["updated_at"])
    groups = sorted(
        (DeadLetterGroup(**group) for group in grouped.values()),
        key=lambda group: (-group.count, -group.last_seen.timestamp()),
    )
    return RetryingGroups(groups=groups, examined=len(rows), truncated=truncated)


def retrying_emails_in_group(*, error_group: str) -> QuerySet[EmailJob]:
    """Every retrying email of one error group (the key is stored at each failed attempt)."""
    return EmailJob.objects.filter(status=EmailStatus.RETRYING, error_group=error_group)


def email_status_counts(*, email_ids: Iterable[UUID]) -> dict[str, int]:
    """How many of the given emails are in each status (statuses with none are left out)."""
    rows = (
        EmailJob.objects.filter(pk__in=list(email_ids))
        .values("status")
        .annotate(n=Count("pk"))
        .order_by("status")
    )
    return {row["status"]: row["n"] for row in rows}


# --- Admin: dashboard ---------------------------------------------------------------------------

DASHBOARD_QUEUES = ("high", "default", "low")
CHART_HOURS = 48
CHART_SERIES = (EventType.SENT, EventType.FAILED, EventType.BOUNCED)


@dataclass(frozen=True)
class HourBucket:
    """Events of each charted type in one hour (`start` is the hour's first instant, UTC)."""

    start: datetime
    counts: dict[str, int]


@dataclass
class DashboardStats:
    """What an operator checks first; Redis numbers are None when Redis cannot be reached."""

    now: datetime
    queue_depths: dict[str, int | None]
    scheduled_jobs: int | None
    workers: int | None
    redis_error: str
    oldest_queued_at: datetime | None
    oldest_due_retry_at: datetime | None
    sent_last_hour: int
    sent_last_day: int
    failed_last_hour: int
    failed_last_day: int
    hourly: list[HourBucket] = field(default_factory=list)
    oldest_due_scheduled_at: datetime | None = None
    # Emails waiting for their priority's drain, from PostgreSQL: one drain job serves many
    # emails, so the Redis queue depths count jobs, not emails.
    queued_emails: dict[str, int] = field(default_factory=dict)

    @property
    def oldest_waiting_at(self) -> datetime | None:
        """When the email waiting longest (queued, or a retry or a scheduled send whose time has
        come) began to."""
        candidates = (self.oldest_queued_at, self.oldest_due_retry_at, self.oldest_due_scheduled_at)
        moments = [m for m in candidates if m is not None]
        return min(moments) if moments else None

    @property
    def oldest_waiting_seconds(self) -> float | None:
        """How long the email waiting longest has been waiting."""
        oldest = self.oldest_waiting_at
        return None if oldest is None else max(0.0, (self.now - oldest).total_seconds())

    @property
    def redis_available(self) -> bool:
        """Whether the Redis numbers could be read."""
        return not self.redis_error


def _redis_stats() -> tuple[dict[str, int | None], int | None, int | None, str]:
    """Queue depths, scheduled jobs and live workers, or Nones and the error if Redis is down."""
    try:
        stats = scheduling.queue_stats(queue_names=DASHBOARD_QUEUES)
    except (RedisError, OSError) as exc:
        return dict.fromkeys(DASHBOARD_QUEUES), None, None, f"{type(exc).__name__}: {exc}"
    return dict(stats.depths), stats.scheduled, stats.workers, ""


def _event_counts(event_type: str, *, now: datetime) -> tuple[int, int]:
    """Events of a type in the last hour and the last 24 hours (tracking_type_time index)."""
    hour_ago = now - timedelta(hours=1)
    counts = TrackingEvent.objects.filter(
        event_type=event_type, occurred_at__gte=now - timedelta(hours=24), occurred_at__lte=now
    ).aggregate(
        # Counting a column of the index (not the id) lets PostgreSQL answer from the index.
        day=Count("occurred_at"),
        hour=Count("occurred_at", filter=Q(occurred_at__gte=hour_ago)),
    )
    return counts["hour"], counts["day"]


def events_per_hour(
    *, now: datetime, hours: int = CHART_HOURS, event_types: Sequence[str] = CHART_SERIES
) -> list[HourBucket]:
    """Counts of each event type per UTC hour over the last `hours` hours, oldest hour first.

    One GROUP BY per type over the (event_type, occurred_at) index; hours without events are 0.
    """
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    starts = [current - timedelta(hours=offset) for offset in range(hours - 1, -1, -1)]
    counts: dict[datetime, dict[str, int]] = {
        start: dict.fromkeys(event_types, 0) for start in starts
    }
    for event_type in event_types:
        rows = (
            TrackingEvent.objects.filter(
                event_type=event_type, occurred_at__gte=starts[0], occurred_at__lte=now
            )
            .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
            .values("hour")
            .annotate(n=Count("*"))
            .order_by("hour")
        )
        for row in rows:
            bucket = counts.get(row["hour"].astimezone(UTC))
            if bucket is not None:
                bucket[event_type] = row["n"]
    return [HourBucket(start=start, counts=counts[start]) for start in starts]


def queued_email_counts() -> dict[str, int]:
    """Queued emails per priority (an index-only count on the drain's partial index)."""
    counts = dict.fromkeys(DASHBOARD_QUEUES, 0)
    rows = (
        EmailJob.objects.filter(status=EmailStatus.QUEUED)
        .values("priority")
        .annotate(n=Count("priority"))
        .order_by()
    )
    for row in rows:
        counts[row["priority"]] = row["n"]
    return counts


def dashboard_stats(*, now: datetime | None = None) -> DashboardStats:
    """Queue depths, workers, the oldest waiting email, recent sends and failures, hourly chart.

    Every database read uses an index; Redis being down only blanks the Redis numbers.
    """
    now = now or timezone.now()
    depths, scheduled, workers, redis_error = _redis_stats()
    # An email's updated_at is when it entered `queued` (created, retried): the (status,
    # updated_at) index finds the oldest without scanning.
    oldest_queued = (
        EmailJob.objects.filter(status=EmailStatus.QUEUED)
        .order_by("updated_at")
        .values_list("updated_at", flat=True)
        .first()
    )
    oldest_retry = EmailJob.objects.filter(
        status=EmailStatus.RETRYING, next_attempt_at__lte=now
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    # A scheduled email past its send_at is waiting too (say, while no scheduler runs).
    oldest_scheduled = EmailJob.objects.filter(
        status=EmailStatus.SCHEDULED, send_at__lte=now
    ).aggregate(oldest=Min("send_at"))["oldest"]
    sent_hour, sent_day = _event_counts(EventType.SENT, now=now)
    failed_hour, failed_day = _event_counts(EventType.FAILED, now=now)
    return DashboardStats(
        now=now,
        queue_depths=depths,
        scheduled_jobs=scheduled,
        workers=workers,
        redis_error=redis_error,
        oldest_queued_at=oldest_queued,
        oldest_due_retry_at=oldest_retry,
        oldest_due_scheduled_at=oldest_scheduled,
        sent_last_hour=sent_hour,
        sent_last_day=sent_day,
        failed_last_hour=failed_hour,
        failed_last_day=failed_day,
        hourly=events_per_hour(now=now),
        queued_emails=queued_email_counts(),
    )
