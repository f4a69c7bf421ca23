"""The admin dashboard's numbers, across all clients: queues and workers (from Redis), waiting
emails, recent sends and failures, and events per hour (from PostgreSQL)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone
from redis.exceptions import RedisError

from mailqueue import scheduling
from mailqueue.models import EmailJob, EmailStatus, Priority, QueuePause
from mailqueue.selectors.queues import queue_pauses
from tracking.models import EventType, TrackingEvent

# Every priority is an RQ queue, listed in the order workers drain them.
DASHBOARD_QUEUES = tuple(Priority.values)
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
    # The paused priorities (workers claim nothing from them), by name.
    pauses: dict[str, QueuePause] = field(default_factory=dict)

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
        pauses=queue_pauses(),
    )
