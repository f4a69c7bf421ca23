"""The scrape: counters from Redis, gauges computed now, and this process's own metrics.

Gauges are not stored anywhere: each scrape asks PostgreSQL for the waiting emails (the indexed
per-priority counts `GET /api/v1/queues/` shows) and Redis for the live workers. Redis being
down leaves out the counters and `workers`; the rest is still answered.
"""

import logging
from collections.abc import Iterator
from functools import cache

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisError

from event_sends.selectors import events_stream_stats
from mailqueue import conf
from mailqueue.metrics.counters import (
    BUCKET,
    COUNTER,
    DURATION_BUCKETS,
    FAMILIES,
    INF,
    SUM,
    Family,
    counters_read,
)
from mailqueue.providers import providers_circuits
from mailqueue.selectors.queues import queues_overview

logger = logging.getLogger(__name__)

SCHEDULED_QUEUE, RETRYING_QUEUE = "scheduled", "retrying"


def _counter(family: Family, stored: dict) -> CounterMetricFamily:
    metric = CounterMetricFamily(family.name, family.documentation, labels=family.labels)
    for (sample, labels), value in sorted(stored.items()):
        if sample == family.name:
            metric.add_metric(list(labels), value)
    return metric


def _histogram(family: Family, stored: dict) -> HistogramMetricFamily:
    """Cumulative buckets, count and sum from the per-bucket counts stored."""
    metric = HistogramMetricFamily(family.name, family.documentation, labels=family.labels)
    series = sorted({labels[:-1] for sample, labels in stored if sample == family.name + BUCKET})
    for labels in series:
        buckets, total = [], 0.0
        for bound in (*DURATION_BUCKETS, INF):
            total += stored.get((family.name + BUCKET, (*labels, str(bound))), 0.0)
            name = INF if bound == INF else floatToGoString(bound)
            buckets.append((name, total))
        metric.add_metric(
            list(labels), buckets, sum_value=stored.get((family.name + SUM, labels), 0.0)
        )
    return metric


class MailqueueCollector(Collector):
    """Mailqueue's metrics, read fresh at each scrape."""

    def collect(self) -> Iterator[Metric]:
        """The stored counters and histogram, then the queue and worker gauges."""
        try:
            stored = counters_read()
        except (RedisError, OSError) as exc:
            logger.warning("metrics: counters left out of the scrape, Redis unavailable: %s", exc)
            stored = None
        for family in FAMILIES:
            if stored is None:
                continue
            yield _counter(family, stored) if family.kind == COUNTER else _histogram(family, stored)
        yield from _gauges()
        yield from _event_gauges()
        yield from _circuit_gauges()


def _gauges() -> Iterator[Metric]:
    overview = queues_overview()
    size = GaugeMetricFamily(
        "queue_size",
        "Emails waiting: queued per priority (high, default, low), and every scheduled and "
        "retrying email whatever its time.",
        labels=["queue"],
    )
    age = GaugeMetricFamily(
        "oldest_queued_email_age_seconds",
        "Seconds the oldest email of a priority has waited to be sent (queued, or a scheduled "
        "send or retry whose time came); 0 when none waits.",
        labels=["priority"],
    )
    for queue in overview.queues:
        size.add_metric([queue.name], queue.queued)
        age.add_metric([queue.name], queue.oldest_age_seconds or 0.0)
    size.add_metric([SCHEDULED_QUEUE], sum(queue.scheduled for queue in overview.queues))
    size.add_metric([RETRYING_QUEUE], sum(queue.retrying for queue in overview.queues))
    yield size
    yield age
    workers = overview.totals["workers"]
    if workers is not None:
        yield GaugeMetricFamily("workers", "Live RQ worker processes (all hosts).", workers)


# The events stream's state (see event_sends): name, events_stream_stats key, help text.
_EVENT_GAUGES = (
    ("email_events_lag", "lag", "Events in the stream no consumer has read yet."),
    ("email_events_pending", "pending", "Events read by a consumer and not yet acknowledged."),
    ("email_events_dead_letters", "dead_letters", "Events in the dead-letter stream."),
    ("email_events_consumers", "consumers", "Consumers in the events stream's group."),
)


def _event_gauges() -> Iterator[Metric]:
    """The event consumer's lag, pending entries, dead letters and consumers (left out while
    Redis is down)."""
    try:
        stats = events_stream_stats()
    except (RedisError, OSError) as exc:
        logger.warning("metrics: event stream gauges left out, Redis unavailable: %s", exc)
        return
    for name, key, documentation in _EVENT_GAUGES:
        yield GaugeMetricFamily(name, documentation, stats[key])


# The circuit breaker's states as gauge values.
_CIRCUIT_VALUES = {"closed": 0, "open": 1, "half_open": 2}


def _circuit_gauges() -> Iterator[Metric]:
    """Each configured provider's circuit breaker state (left out while Redis is down)."""
    try:
        circuits = providers_circuits(names=conf.providers())
    except (RedisError, OSError) as exc:
        logger.warning("metrics: circuit breaker gauges left out, Redis unavailable: %s", exc)
        return
    state = GaugeMetricFamily(
        "email_provider_circuit_state",
        "Each provider's circuit breaker: 0 closed (calls go through), 1 open (no calls; email "
        "fails over or waits), 2 half-open (one probe decides).",
        labels=["provider"],
    )
    failures = GaugeMetricFamily(
        "email_provider_circuit_recent_failures",
        "Transient failures of each provider within MAILQUEUE_BREAKER_WINDOW_SECONDS.",
        labels=["provider"],
    )
    for name, circuit in circuits.items():
        state.add_metric([name], _CIRCUIT_VALUES[circuit.state])
        failures.add_metric([name], circuit.recent_failures)
    yield state
    yield failures


@cache
def metrics_registry() -> CollectorRegistry:
    """The registry `/metrics` exposes (not prometheus_client's global one): Mailqueue's
    metrics plus the answering process's own process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailqueueCollector())
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry
