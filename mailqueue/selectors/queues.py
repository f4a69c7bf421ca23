"""The queues as an operator steers them: emails waiting per priority (PostgreSQL), whether each
is paused (PostgreSQL), and the live workers serving it (Redis)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq.worker_registration import REDIS_WORKER_KEYS

from mailqueue import scheduling
from mailqueue.models import EmailJob, EmailStatus, Priority, QueuePause

# Statuses of emails still on their way: the rows a queue count scans (a backlog, not history).
_WAITING = (EmailStatus.QUEUED, EmailStatus.SCHEDULED, EmailStatus.RETRYING, EmailStatus.SENDING)


@dataclass(frozen=True)
class QueueState:
    """One priority: its emails per state, how long the oldest has waited, pause and workers."""

    name: str
    queued: int
    scheduled: int
    retrying: int
    sending: int
    failed_24h: int
    oldest_age_seconds: float | None
    paused: bool
    paused_at: datetime | None
    paused_by: str
    # None when Redis cannot be reached.
    workers: int | None


@dataclass(frozen=True)
class QueuesOverview:
    """Every queue, plus totals (`workers` counts each live worker once)."""

    queues: list[QueueState]
    totals: dict


def queue_pauses() -> dict[str, QueuePause]:
    """The paused priorities, by name."""
    return {pause.priority: pause for pause in QueuePause.objects.all()}


def workers_per_queue() -> tuple[dict[str, int], int]:
    """Live RQ workers listening to each queue, and live workers in all (raises RedisError)."""
    redis = scheduling.connection()
    keys = list(redis.smembers(REDIS_WORKER_KEYS))
    pipe = redis.pipeline()
    for key in keys:
        pipe.hget(key, "queues")
    counts: dict[str, int] = {}
    live = 0
    # A killed worker stays registered until RQ cleans up, but its own hash expires.
    for names in pipe.execute() if keys else []:
        if names is None:
            continue
        live += 1
        for name in names.decode().split(","):
            counts[name] = counts.get(name, 0) + 1
    return counts, live


def _age(now: datetime, *moments: datetime | None) -> float | None:
    known = [moment for moment in moments if moment is not None]
    return max(0.0, (now - min(known)).total_seconds()) if known else None


def queues_overview(*, now: datetime | None = None) -> QueuesOverview:
    """Per priority: emails queued, scheduled, retrying, sending, failed in 24 h, the oldest
    waiting email's age, the pause and the live workers; plus totals.

    Two indexed GROUP BYs over the waiting emails and the last day's failures; Redis being down
    only blanks the worker counts.
    """
    now = now or timezone.now()
    waiting = {
        row["priority"]: row
        for row in EmailJob.objects.filter(status__in=_WAITING)
        .values("priority")
        .annotate(
            queued=Count("pk", filter=Q(status=EmailStatus.QUEUED)),
            scheduled=Count("pk", filter=Q(status=EmailStatus.SCHEDULED)),
            retrying=Count("pk", filter=Q(status=EmailStatus.RETRYING)),
            sending=Count("pk", filter=Q(status=EmailStatus.SENDING)),
            # Like the dashboard: a queued email's updated_at is when it entered `queued`; a due
            # retry or scheduled send has waited since its time came.
            oldest_queued=Min("updated_at", filter=Q(status=EmailStatus.QUEUED)),
            oldest_retry=Min(
                "next_attempt_at", filter=Q(status=EmailStatus.RETRYING, next_attempt_at__lte=now)
            ),
            oldest_scheduled=Min(
                "send_at", filter=Q(status=EmailStatus.SCHEDULED, send_at__lte=now)
            ),
        )
        .order_by()
    }
    failed = {
        row["priority"]: row["n"]
        for row in EmailJob.objects.filter(
            status=EmailStatus.FAILED, updated_at__gte=now - timedelta(hours=24)
        )
        .values("priority")
        .annotate(n=Count("priority"))
        .order_by()
    }
    pauses = queue_pauses()
    try:
        workers, live = workers_per_queue()
    except (RedisError, OSError):
        workers, live = None, None
    queues = []
    for name in Priority.values:
        row = waiting.get(name, {})
        pause = pauses.get(name)
        queues.append(
            QueueState(
                name=name,
                queued=row.get("queued", 0),
                scheduled=row.get("scheduled", 0),
                retrying=row.get("retrying", 0),
                sending=row.get("sending", 0),
                failed_24h=failed.get(name, 0),
                oldest_age_seconds=_age(
                    now,
                    row.get("oldest_queued"),
                    row.get("oldest_retry"),
                    row.get("oldest_scheduled"),
                ),
                paused=pause is not None,
                paused_at=pause.paused_at if pause else None,
                paused_by=pause.paused_by if pause else "",
                workers=None if workers is None else workers.get(name, 0),
            )
        )
    ages = [queue.oldest_age_seconds for queue in queues if queue.oldest_age_seconds is not None]
    totals = {
        key: sum(getattr(queue, key) for queue in queues)
        for key in ("queued", "scheduled", "retrying", "sending", "failed_24h")
    }
    totals["oldest_age_seconds"] = max(ages) if ages else None
    totals["workers"] = live
    return QueuesOverview(queues=queues, totals=totals)
