"""Writing what delivery decided for a group of emails, set-based.

A worker holds at most a small group of outcomes before it writes them (see delivery.py); this
module writes one group. On PostgreSQL it is one statement, one round trip: the UPDATE that
checks each email is still this worker's (status `sending` and its claim token), the attempt,
capture, event and tracked-link INSERTs, in data-modifying CTEs, so events and tracked links
exist only for the emails whose UPDATE matched. Other databases (SQLite for `make run`) take the
same steps through the ORM in one transaction.
"""

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from client_webhooks.services import webhooks_dispatch
from mailqueue.db import column_list, json_dumps, json_recordset, json_rows, server_binding_cursor
from mailqueue.logs import outcomes_log
from mailqueue.metrics.recording import outcomes_count
from mailqueue.models import CapturedMessage, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue_on_commit
from mailqueue.services.redaction import decision_redact, emails_context_redact
from mailqueue.services.simulator import SIMULATOR, simulated_events_record
from tracking.models import TrackedLink, TrackingEvent
from tracking.services import NewEvent, events_record

logger = logging.getLogger(__name__)

# decisions_record's answer for an email taken back from this worker before its outcome was
# written (the sweeper reclaimed it after its lease ran out, another worker claimed it).
LEASE_LOST = "lease_lost"
# Statuses after which an email is never rendered again (its secret context values can go).
_FINAL_STATUSES = (EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SUPPRESSED)


@dataclass
class Decision:
    """What delivering one email came to, before it is written: the row's new status and fields,
    the attempt rows, the events, a job to run later, and captured messages."""

    email: EmailJob
    status: str
    fields: dict = field(default_factory=dict)
    tries: list[DeliveryAttempt] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    captured: list[CapturedMessage] = field(default_factory=list)
    links: list[TrackedLink] = field(default_factory=list)
    job: DeliveryJob | None = None


# Columns a decision may change, with the type its value is cast to in the statement. A value a
# decision does not set is NULL there and keeps the column as it is.
_UPDATED_COLUMNS = {
    "status": "text",
    "attempts": "integer",
    "provider": "text",
    "message_id": "text",
    "sent_at": "timestamptz",
    "last_error": "text",
    "error_class": "text",
    "error_group": "text",
    "next_attempt_at": "timestamptz",
    "rq_job_id": "text",
    "subject": "text",
    "html": "text",
    "text": "text",
}


def decisions_record(decisions: list[Decision]) -> list[str]:
    """Write a group of decisions; return each email's new status, or LEASE_LOST.

    An email this worker no longer owns keeps its row and gets no events. Its attempts are
    recorded either way, because they happened.
    """
    if not decisions:
        return []
    now = timezone.now()
    # Emails with secrets (one-time codes) are masked here, in Python, and their final context
    # in a statement of its own: the statement every email pays for stays the same.
    secret = [d for d in decisions if d.email.secret_context_keys]
    for decision in secret:
        decision_redact(decision=decision)
    final_ids = [d.email.pk for d in secret if d.status in _FINAL_STATUSES]
    with transaction.atomic() if final_ids else nullcontext():
        if connection.vendor == "postgresql":
            owned_ids = _record_postgresql(decisions, now)
        else:
            owned_ids = _record_with_orm(decisions, now)
        if final_ids:
            emails_context_redact(email_ids=[pk for pk in final_ids if pk in owned_ids])
    jobs = [d.job for d in decisions if d.job is not None and d.email.pk in owned_ids]
    if jobs:
        deliveries_enqueue_on_commit(jobs)
    statuses = []
    for decision in decisions:
        if decision.email.pk in owned_ids:
            statuses.append(decision.status)
        else:
            logger.warning("email %s: left `sending` while being delivered", decision.email.pk)
            statuses.append(LEASE_LOST)
    outcomes_count(decisions=decisions, statuses=statuses)
    outcomes_log(decisions=decisions, statuses=statuses)
    simulated = [
        (decision.email, decision.fields.get("message_id") or "")
        for decision, status in zip(decisions, statuses, strict=True)
        if status == EmailStatus.SENT and decision.fields.get("provider") == SIMULATOR
    ]
    if simulated:
        _simulated_record(simulated)
    return statuses


def _simulated_record(sent: list[tuple[EmailJob, str]]) -> None:
    """A test key's simulated events; the emails' outcomes stand even if they cannot be stored."""
    try:
        simulated_events_record(sent=sent)
    except DatabaseError as exc:
        logger.warning("simulated events of %d email(s) not recorded: %s", len(sent), exc)


def _changes(decision: Decision) -> dict:
    values = {name: decision.fields.get(name) for name in _UPDATED_COLUMNS}
    values["status"] = decision.status
    return values


def _record_postgresql(decisions: list[Decision], now) -> set:
    """One statement: UPDATE the owned rows, INSERT attempts, captures and their events.

    Each table's rows travel as one JSON parameter (`jsonb_to_recordset`), so the statement
    text is the same for every group and binding its values is one C call.
    """
    decided = [{"id": d.email.pk, "token": d.email.claim_token, **_changes(d)} for d in decisions]
    events = [
        TrackingEvent(
            email_id=d.email.pk,
            event_type=event.event_type,
            occurred_at=event.occurred_at or now,
            provider=event.provider,
            recipient=event.recipient,
            description=event.description[:2000],
            data=event.data,
        )
        for d in decisions
        for event in d.events
    ]
    params = [
        json_dumps(decided),
        now,
        EmailStatus.SENDING,
        json_dumps(json_rows(DeliveryAttempt, [row for d in decisions for row in d.tries])),
        json_dumps(json_rows(CapturedMessage, [row for d in decisions for row in d.captured])),
        json_dumps(json_rows(TrackingEvent, events)),
        json_dumps(json_rows(TrackedLink, [row for d in decisions for row in d.links])),
    ]
    with server_binding_cursor() as cursor:
        cursor.execute(_statement(), params)
        owned = {row[0] for row in cursor.fetchall()}
    # Outbound webhooks (nothing at all while no client has an endpoint). The outcomes are
    # written: a failure here must not fail the job, or its other emails would be sent again.
    try:
        webhooks_dispatch(
            [e for e in events if e.email_id in owned],
            emails={d.email.pk: d.email for d in decisions},
        )
    except Exception:
        logger.exception("outbound webhooks of %d events not created", len(events))
    return owned


@cache
def _statement() -> str:
    """The text of the one statement that writes a group (the same for every group)."""
    quote = connection.ops.quote_name
    decided_columns = ", ".join(
        f"{quote(name)} {kind}"
        for name, kind in {"id": "uuid", "token": "uuid", **_UPDATED_COLUMNS}.items()
    )
    assignments = ", ".join(
        f"{quote(name)} = COALESCE(decided.{quote(name)}, email.{quote(name)})"
        for name in _UPDATED_COLUMNS
    )
    inserts = []
    for model in (DeliveryAttempt, CapturedMessage, TrackingEvent, TrackedLink):
        # Events and tracked links are written only for the emails this worker still owned.
        owned_only = model in (TrackingEvent, TrackedLink)
        where = " WHERE email_id IN (SELECT id FROM owned)" if owned_only else ""
        if model is TrackedLink:
            # A message sent again (delivery is at least once) has the same links.
            where += " ON CONFLICT (email_id, position) DO NOTHING"
        inserts.append(
            f", {model._meta.model_name} AS (INSERT INTO {quote(model._meta.db_table)} "
            f"{column_list(model)} SELECT * FROM {json_recordset(model, 'new_row')}{where})"
        )
    return (
        f"WITH decided AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS decided "
        f"({decided_columns})), "
        f"owned AS (UPDATE {quote(EmailJob._meta.db_table)} AS email SET {assignments}, "
        "lease_expires_at = NULL, claim_token = NULL, updated_at = %s "
        "FROM decided WHERE email.id = decided.id AND email.status = %s "
        "AND email.claim_token = decided.token RETURNING email.id)"
        + "".join(inserts)
        + " SELECT id FROM owned"
    )


def _record_with_orm(decisions: list[Decision], now) -> set:
    """The same writes through the ORM, in one transaction (databases other than PostgreSQL)."""
    with transaction.atomic():
        tokens = dict(
            EmailJob.objects.select_for_update()
            .filter(pk__in=[decision.email.pk for decision in decisions])
            .filter(status=EmailStatus.SENDING)
            .values_list("pk", "claim_token")
        )
        owned = [d for d in decisions if tokens.get(d.email.pk) == d.email.claim_token]
        for decision in owned:
            changes = {name: v for name, v in _changes(decision).items() if v is not None}
            EmailJob.objects.filter(pk=decision.email.pk).update(
                **changes, lease_expires_at=None, claim_token=None, updated_at=now
            )
        DeliveryAttempt.objects.bulk_create([row for d in decisions for row in d.tries])
        CapturedMessage.objects.bulk_create([row for d in decisions for row in d.captured])
        events_record(events=[event for d in owned for event in d.events])
        TrackedLink.objects.bulk_create(
            [row for d in owned for row in d.links], ignore_conflicts=True
        )
    return {decision.email.pk for decision in owned}
