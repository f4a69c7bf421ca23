"""The metrics store: counters and histogram buckets in one Redis hash every process adds to.

Each series is one field of the hash `mailqueue:metrics:counters` (the same Redis as the RQ
queues), named by the JSON list of its sample name and label values. Increments are gathered in
memory (`Increments`) and written with one HINCRBY per distinct series, all in one pipelined
round trip; a scrape reads the whole hash with one HGETALL. So any number of worker processes on
any number of hosts count into the same numbers, and none needs a scrape port or
prometheus_client's multiprocess directory.

The counters live only in Redis: they start again from zero when Redis loses its data (a
restart without persistence, a FLUSHDB), which Prometheus's `rate()` and `increase()` treat as
an ordinary counter reset.
"""

import json
import logging
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from mailqueue.redis_config import redis_target
from mailqueue.scheduling import connection

logger = logging.getLogger(__name__)

KEY = "mailqueue:metrics:counters"


@dataclass(frozen=True)
class Family:
    """One metric as exposed: its name, type, help text and label names."""

    name: str
    kind: str
    documentation: str
    labels: tuple[str, ...] = ()


COUNTER, HISTOGRAM = "counter", "histogram"

PROCESSED = Family(
    "email_jobs_processed_total",
    COUNTER,
    "Delivery outcomes written by the workers, by new status (sent, failed, retrying, "
    "suppressed) and provider (none: no provider was involved).",
    ("status", "provider"),
)
QUEUED = Family(
    "email_jobs_queued_total",
    COUNTER,
    "Emails accepted for delivery, by priority: at creation (queued now or scheduled for "
    "later) and again when a failed or cancelled email is retried.",
    ("priority",),
)
TRACKED = Family("email_jobs_tracked_total", COUNTER, "Emails stored (every email created).")
DURATION = Family(
    "email_job_processing_duration_seconds",
    HISTOGRAM,
    "Seconds from a worker's claim of an email to its written outcome, per email.",
    ("provider",),
)
PROVIDER_REQUESTS = Family(
    "email_provider_requests_total",
    COUNTER,
    "Messages handed to a provider (one per try, whatever its result).",
    ("provider",),
)
PROVIDER_ERRORS = Family(
    "email_provider_errors_total",
    COUNTER,
    "Provider tries that failed, by kind: transient, permanent, timeout or outage.",
    ("provider", "kind"),
)
CIRCUIT_OPENED = Family(
    "email_provider_circuit_opened_total",
    COUNTER,
    "Times a provider's circuit breaker opened: too many transient failures in the window, or "
    "a failed half-open probe (counted by the breaker's Redis script).",
    ("provider",),
)
WEBHOOK_EVENTS = Family(
    "email_webhook_events_total",
    COUNTER,
    "Events stored from ESP tracking webhooks (replays not counted again), by ESP and type.",
    ("esp", "type"),
)
RATE_LIMITED = Family(
    "email_rate_limited_total",
    COUNTER,
    "Times an email had to wait for a shared rate limit (MAILQUEUE_RATE_LIMITS) before going, "
    "by limit (a provider name or domain:<recipient domain>).",
    ("limit",),
)
FAMILIES = (
    PROCESSED,
    QUEUED,
    TRACKED,
    DURATION,
    PROVIDER_REQUESTS,
    PROVIDER_ERRORS,
    CIRCUIT_OPENED,
    WEBHOOK_EVENTS,
    RATE_LIMITED,
)

# Upper bounds of the duration buckets: a claimed email can wait behind the rest of its chunk,
# and a provider can take up to its timeout, so the range runs from milliseconds to minutes.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
INF = "+Inf"
BUCKET, SUM = "_bucket", "_sum"


@lru_cache(maxsize=4096)
def _field(sample: str, labels: tuple[str, ...]) -> str:
    # Cached: a worker counts the same few series over and over.
    return json.dumps([sample, *labels], separators=(",", ":"))


def counter_field(family: Family, *labels: str) -> str:
    """The hash field of one counter series (for writers outside `Increments`, such as the
    circuit breaker's Lua script)."""
    return _field(family.name, labels)


class Increments:
    """Additions to the counters and observations of the histogram, written in one round trip."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.sums: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self.counts or self.sums)

    def add(self, family: Family, *labels: str, amount: int = 1) -> None:
        """Add to one series of a counter."""
        if amount:
            self.counts[_field(family.name, labels)] += amount

    def observe(self, family: Family, value: float, *labels: str) -> None:
        """Record one observation of a histogram (its own bucket only: a scrape accumulates)."""
        index = bisect_left(DURATION_BUCKETS, value)
        bound = str(DURATION_BUCKETS[index]) if index < len(DURATION_BUCKETS) else INF
        self.counts[_field(family.name + BUCKET, (*labels, bound))] += 1
        self.sums[_field(family.name + SUM, labels)] += value

    def queue_on(self, pipe: Pipeline) -> None:
        """Add the increments' commands to a pipeline (one HINCRBY per distinct series)."""
        for field, amount in self.counts.items():
            pipe.hincrby(KEY, field, amount)
        for field, amount in self.sums.items():
            pipe.hincrbyfloat(KEY, field, amount)


# A metrics write is dropped rather than waited for: the outcomes it counts are already written,
# and a Redis that stalls must not hold up a worker's next emails.
WRITE_TIMEOUT_SECONDS = 0.5
# After a failed write, writes are dropped without trying for this long: a Redis that is down or
# stalled costs each process one timeout (and one warning) per interval, not one per group.
RETRY_AFTER_SECONDS = 30.0
_skip_until: dict[str, float] = {}


def _redis_url() -> str:
    # Where the queues' Redis is (REDIS_URL or the Sentinel service), without its password.
    return redis_target(settings.RQ_QUEUES["default"])


def metrics_connection() -> Redis:
    """The queues' Redis with the metrics' short timeouts (one client per URL and process)."""
    return connection(timeout=WRITE_TIMEOUT_SECONDS)


def increments_write(increments: Increments) -> None:
    """Write increments in one pipelined round trip; never raises, drops them if Redis fails."""
    if not increments:
        return
    url = _redis_url()
    if time.monotonic() < _skip_until.get(url, 0.0):
        return
    try:
        pipe = metrics_connection().pipeline(transaction=False)
        increments.queue_on(pipe)
        pipe.execute()
    except (RedisError, OSError) as exc:
        _skip_until[url] = time.monotonic() + RETRY_AFTER_SECONDS
        logger.warning(
            "metrics: Redis unavailable, counter increments dropped for the next %.0f s: %s",
            RETRY_AFTER_SECONDS,
            exc,
        )
    except Exception:
        # Counting runs after the outcomes are written: a bug here must not fail the job, whose
        # other emails would then wait for their leases to run out.
        _skip_until[url] = time.monotonic() + RETRY_AFTER_SECONDS
        logger.exception("metrics: counter increments dropped")


def counters_read() -> dict[tuple[str, tuple[str, ...]], float]:
    """Every stored series: (sample name, label values) -> value (raises RedisError)."""
    stored = metrics_connection().hgetall(KEY)
    values = {}
    for field, value in stored.items():
        sample, *labels = json.loads(field)
        values[(sample, tuple(labels))] = float(value)
    return values
