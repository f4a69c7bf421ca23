"""What is counted, and where: delivery outcomes, accepted emails and ESP webhook events.

Each function turns one group of things (a written outcome group, an API request's emails, a
webhook request's events) into one set of increments, written in one Redis round trip: never
one per email.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from django.utils import timezone

from mailqueue.metrics.counters import (
    DURATION,
    PROCESSED,
    PROVIDER_ERRORS,
    PROVIDER_REQUESTS,
    QUEUED,
    RATE_LIMITED,
    TRACKED,
    WEBHOOK_EVENTS,
    Increments,
    increments_write,
)
from mailqueue.models import EmailStatus

if TYPE_CHECKING:
    # Only for the hints: outcomes.py imports this module.
    from mailqueue.services.outcomes import Decision
    from tracking.models import TrackingEvent

# The outcomes counted. Anything else decisions_record answers (an email whose lease was lost)
# is counted by the worker that owns the email now.
COUNTED_STATUSES = frozenset(
    {EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.RETRYING, EmailStatus.SUPPRESSED}
)
NO_PROVIDER = "none"


def _outcome_provider(decision: "Decision") -> str:
    """The provider that took the message, else the last one tried, else `none`."""
    provider = decision.fields.get("provider") or ""
    if not provider and decision.tries:
        provider = decision.tries[-1].provider
    return provider or NO_PROVIDER


def outcomes_count(*, decisions: Sequence["Decision"], statuses: Sequence[str]) -> None:
    """Count a written group of outcomes: statuses, provider tries and errors, and each email's
    time from claim to outcome (the claim set the instance's `updated_at`)."""
    now = timezone.now()
    increments = Increments()
    for decision, status in zip(decisions, statuses, strict=True):
        if status not in COUNTED_STATUSES:
            continue
        provider = _outcome_provider(decision)
        increments.add(PROCESSED, str(status), provider)
        claimed_at = decision.email.updated_at
        if claimed_at is not None:
            seconds = max(0.0, (now - claimed_at).total_seconds())
            increments.observe(DURATION, seconds, provider)
        for attempt in decision.tries:
            # A try without a provider (a template that cannot render) sent no request.
            if not attempt.provider:
                continue
            increments.add(PROVIDER_REQUESTS, attempt.provider)
            kind = getattr(attempt, "error_kind", "")
            if kind:
                increments.add(PROVIDER_ERRORS, attempt.provider, kind)
    increments_write(increments)


def emails_accepted_increments(*, queued: Mapping[str, int], stored: int) -> Increments:
    """Increments for emails accepted for delivery (count per priority) and emails stored; the
    caller writes them with the Redis round trip that requests their delivery."""
    increments = Increments()
    for priority, count in queued.items():
        increments.add(QUEUED, str(priority), amount=count)
    increments.add(TRACKED, amount=stored)
    return increments


def esp_events_count(*, esp: str, events: Iterable["TrackingEvent"]) -> None:
    """Count the events one ESP webhook request stored, by type."""
    increments = Increments()
    for event in events:
        increments.add(WEBHOOK_EVENTS, esp, str(event.event_type))
    increments_write(increments)


def rate_limit_waits_count(waits: Mapping[str, int]) -> None:
    """Count the waits for rate limits a delivery saw, by limit name (one write per group)."""
    increments = Increments()
    for limit, count in waits.items():
        increments.add(RATE_LIMITED, limit, amount=count)
    increments_write(increments)
