"""One email's life as the admin timeline shows it: creation, queueing, attempts and events."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.utils import timezone

from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from tracking.models import EventType, TrackingEvent


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


def _queueing_entries(
    *, email: EmailJob, events: list[TrackingEvent], now: datetime
) -> list[TimelineEntry]:
    """Queued at once, or scheduled and then queued when its send time came (unless cancelled
    before)."""

    def entry(at: datetime, kind: str, title: str) -> TimelineEntry:
        return TimelineEntry(at=at, kind=kind, title=title, detail=f"priority {email.priority}")

    if not (email.send_at and email.send_at > email.created_at):
        return [entry(email.created_at, "queued", "Queued")]
    entries = [
        entry(email.created_at, "scheduled", f"Scheduled for {email.send_at:%Y-%m-%d %H:%M:%S %Z}")
    ]
    cancelled_early = any(
        e.event_type == EventType.CANCELLED and e.occurred_at < email.send_at for e in events
    )
    if email.send_at <= now and not cancelled_early:
        entries.append(entry(email.send_at, "due", "Send time reached: queued"))
    return entries


def _final_entry(*, email: EmailJob, events: list[TrackingEvent]) -> TimelineEntry | None:
    """How the email ended, for rows written without their event (imports, older versions)."""
    final = {
        EmailStatus.SENT: (email.sent_at, "Sent", "ok"),
        EmailStatus.FAILED: (email.updated_at, "Failed", "error"),
        EmailStatus.CANCELLED: (email.updated_at, "Cancelled", "warning"),
    }.get(email.status)
    if not final or not final[0] or email.status in {event.event_type for event in events}:
        return None
    at, title, tone = final
    detail = email.last_error if email.status == EmailStatus.FAILED else ""
    return TimelineEntry(at=at, kind=email.status, title=title, detail=detail, tone=tone)


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
    entries.extend(_queueing_entries(email=email, events=events, now=now))
    attempts = DeliveryAttempt.objects.filter(email=email).order_by("started_at", "id")
    entries.extend(_attempt_entry(attempt) for attempt in attempts)
    entries.extend(_event_entry(event) for event in events)
    final = _final_entry(email=email, events=events)
    if final is not None:
        entries.append(final)
    # A stable sort: entries of one kind at the same instant keep their row order.
    return sorted(entries, key=lambda entry: (entry.at, _TIMELINE_RANK.get(entry.kind, 9)))
