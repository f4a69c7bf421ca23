"""The operator dashboard on the admin home: queues, workers, the providers' circuit breakers,
recent sends and an hourly chart.

The numbers come from `mailqueue.selectors.dashboard` and the circuits from the providers'
breakers (one Redis read); this module only turns them into links and an inline SVG chart (drawn
on the server: no JavaScript, nothing loaded from elsewhere). The admin site
(`mailqueue.admin_site`) puts it on its home page.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django_rq.settings import get_queues_map
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.admin.helpers import email_changelist_url
from mailqueue.models import EmailStatus
from mailqueue.providers import CircuitState, providers_circuits
from mailqueue.selectors.dashboard import DashboardStats, HourBucket
from tracking.models import EventType

CHART_WIDTH = 760
CHART_HEIGHT = 240
PLOT_LEFT = 48
PLOT_RIGHT = CHART_WIDTH - 16
PLOT_TOP = 16
PLOT_BOTTOM = CHART_HEIGHT - 40
# Colour plus dash pattern, so the series are told apart without colour vision too.
SERIES_STYLE = {
    EventType.SENT: ("Sent", "#2e7d32", ""),
    EventType.FAILED: ("Failed", "#c62828", "6 3"),
    EventType.BOUNCED: ("Bounced", "#ef6c00", "2 3"),
}


@dataclass(frozen=True)
class ChartSeries:
    """One line of the chart."""

    key: str
    label: str
    color: str
    dash: str
    points: str
    total: int


@dataclass(frozen=True)
class ChartBucket:
    """One hour column: a hover target whose tooltip spells out the counts."""

    x: float
    width: float
    start: datetime
    end: datetime
    counts: list[tuple[str, int]]


@dataclass(frozen=True)
class ChartTick:
    """A horizontal grid line with its value."""

    y: float
    value: int


@dataclass(frozen=True)
class ChartLabel:
    """A time label under the x axis; `show_day` adds the date under the first and midnights."""

    x: float
    at: datetime
    show_day: bool


def _nice_step(peak: int, *, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten) so `ticks` steps cover the peak."""
    raw = max(peak, 1) / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return max(1, int(factor * magnitude))
    return int(10 * magnitude)


def _time_labels(buckets: list[HourBucket], x_of: Any) -> list[ChartLabel]:
    """A label every 6 hours of local time, so they never overlap."""
    labels = []
    for index, bucket in enumerate(buckets):
        local = timezone.localtime(bucket.start)
        if local.hour % 6 == 0:
            labels.append(
                ChartLabel(x=x_of(index), at=bucket.start, show_day=local.hour == 0 or not labels)
            )
    return labels


def hourly_chart(buckets: list[HourBucket]) -> dict[str, Any]:
    """Coordinates of the sent/failed/bounced chart for the dashboard template."""
    count = max(len(buckets), 1)
    step_x = (PLOT_RIGHT - PLOT_LEFT) / count
    peak = max((n for bucket in buckets for n in bucket.counts.values()), default=0)
    step_y = _nice_step(peak)
    top = step_y * max(1, math.ceil(peak / step_y))

    def y_of(value: int) -> float:
        return round(PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * value / top, 1)

    def x_of(index: int) -> float:
        return round(PLOT_LEFT + step_x * (index + 0.5), 1)

    series = []
    for key, (label, color, dash) in SERIES_STYLE.items():
        values = [bucket.counts.get(key, 0) for bucket in buckets]
        series.append(
            ChartSeries(
                key=str(key),
                label=label,
                color=color,
                dash=dash,
                points=" ".join(f"{x_of(i)},{y_of(v)}" for i, v in enumerate(values)),
                total=sum(values),
            )
        )
    columns = [
        ChartBucket(
            x=round(PLOT_LEFT + step_x * index, 1),
            width=round(step_x, 1),
            start=bucket.start,
            end=bucket.start + timedelta(hours=1),
            counts=[
                (label.lower(), bucket.counts.get(key, 0))
                for key, (label, _, _) in SERIES_STYLE.items()
            ],
        )
        for index, bucket in enumerate(buckets)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PLOT_LEFT,
        "right": PLOT_RIGHT,
        "top": PLOT_TOP,
        "bottom": PLOT_BOTTOM,
        "plot_height": PLOT_BOTTOM - PLOT_TOP,
        "series": series,
        "buckets": columns,
        "ticks": [ChartTick(y=y_of(value), value=value) for value in range(0, top + 1, step_y)],
        "labels": _time_labels(buckets, x_of),
        "hours": len(buckets),
        "empty": peak == 0,
    }


def _rq_url(name: str, queue: str | None = None) -> str:
    """A django-rq dashboard page (for one queue), or "" if django-rq's URLs are not installed."""
    args = [] if queue is None else [get_queues_map().get(queue, 0)]
    try:
        return reverse(f"django_rq:{name}", args=args)
    except NoReverseMatch:
        return ""


def _events_url(event_type: str, *, since: str) -> str:
    """The tracking events of one type since a time: exactly what the dashboard counted."""
    url = reverse("admin:tracking_trackingevent_changelist")
    return f"{url}?{urlencode({'event_type__exact': event_type, 'occurred_at__gte': since})}"


def provider_circuits() -> list[tuple[str, CircuitState]] | None:
    """Each configured provider's circuit breaker, in EMAIL_PROVIDERS order (None: Redis
    cannot be read)."""
    try:
        return list(providers_circuits(names=conf.providers()).items())
    except (RedisError, OSError):
        return None


def dashboard_context(stats: DashboardStats, *, can_control_queues: bool = False) -> dict[str, Any]:
    """The stats plus the links, chart and (for operators) Pause/Resume buttons the admin home
    shows."""
    hour_ago = (stats.now - timedelta(hours=1)).replace(microsecond=0).isoformat()
    day_ago = (stats.now - timedelta(hours=24)).replace(microsecond=0).isoformat()
    return {
        "stats": stats,
        "queues": [
            (
                name,
                depth,
                _rq_url("jobs", name),
                stats.queued_emails.get(name, 0),
                email_changelist_url(status__exact=EmailStatus.QUEUED, priority__exact=name),
                stats.pauses.get(name),
            )
            for name, depth in stats.queue_depths.items()
        ],
        "scheduled_url": _rq_url("scheduler_jobs", "default"),
        "workers_url": _rq_url("workers", "default"),
        "rq_home_url": _rq_url("home"),
        "queued_url": email_changelist_url(status__exact=EmailStatus.QUEUED),
        "retrying_url": email_changelist_url(status__exact=EmailStatus.RETRYING),
        "sent_hour_url": _events_url(EventType.SENT, since=hour_ago),
        "sent_day_url": _events_url(EventType.SENT, since=day_ago),
        "failed_hour_url": _events_url(EventType.FAILED, since=hour_ago),
        "failed_day_url": _events_url(EventType.FAILED, since=day_ago),
        "dead_letters_url": reverse("admin:mailqueue_emailjob_dead_letters"),
        "chart": hourly_chart(stats.hourly),
        "can_control_queues": can_control_queues,
        "circuits": provider_circuits(),
    }
