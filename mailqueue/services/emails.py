"""Writes that accept, cancel and retry emails and batches (the outbox side of the pipeline)."""

import base64
import binascii
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from client_webhooks.services import webhooks_dispatch
from mailqueue import conf
from mailqueue.db import insert_one, insert_rows, json_dumps
from mailqueue.errors import (
    InvalidTransition,
    TemplateRenderError,
    ValidationFailed,
)
from mailqueue.logs import current_request_id
from mailqueue.metrics.recording import emails_accepted_increments
from mailqueue.models import (
    ApiKey,
    Batch,
    CapturedMessage,
    Client,
    EmailAttachment,
    EmailJob,
    EmailStatus,
    Priority,
    Suppression,
    SuppressionReason,
)
from mailqueue.scheduling import (
    DeliveryJob,
    deliveries_enqueue_on_commit,
    delivery_jobs_cancel,
    drains_request_on_commit,
    email_job_id,
    email_job_prefix,
)
from mailqueue.selectors.suppressions import (
    HASHED_ADDRESS_PREFIX,
    email_suppressed_recipients,
    suppressions_for_emails,
)
from mailqueue.services.dead_letters import error_fields
from mailqueue.services.redaction import emails_context_redact, secret_values, text_redact
from mailqueue.services.sender_domains import sender_check
from mailqueue.services.simulator import SIMULATOR
from mailqueue.unsubscribe import (
    UnsubscribeToken,
    check_unsubscribe_headers,
    email_is_transactional,
    unsubscribe_url,
)
from mailqueue.validation import address_spec, check_recipient_count
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.rendering import RenderedContent, render_content, render_subject
from templates_app.selectors import template_get_active
from templates_app.services import template_check_context, template_current_version
from tracking.engagement import tracking_flags
from tracking.models import EventType, TrackingEvent
from tracking.services import NewEvent, events_record

CANCELLABLE = (EmailStatus.SCHEDULED, EmailStatus.QUEUED, EmailStatus.RETRYING)
RETRYABLE = (EmailStatus.FAILED, EmailStatus.CANCELLED)


@dataclass(frozen=True)
class AttachmentInput:
    """An attachment as received: base64 content is decoded by `attachment_decode`."""

    filename: str
    content: bytes
    mimetype: str
    # An inline part's Content-ID, without angle brackets ("" for a plain attachment).
    content_id: str = ""


def attachment_decode(
    *, filename: str, content: str, mimetype: str, field: str, content_id: str = ""
) -> AttachmentInput:
    """Decode one base64 attachment, naming the field if the content is not valid base64."""
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("Attachment content must be base64.", field=field) from None
    return AttachmentInput(filename=filename, content=raw, mimetype=mimetype, content_id=content_id)


def _accept_subject(source, context: dict, *, field: str) -> str:
    """The subject a template renders with this context, or ValidationFailed naming `field`."""
    try:
        return render_subject(source=source.subject, context=context)
    except TemplateRenderError as exc:
        raise ValidationFailed(
            f"The template's subject cannot be rendered with this context: {exc.message}",
            field=field,
        ) from None


def _initial_status(send_at: datetime | None, now: datetime) -> str:
    return EmailStatus.SCHEDULED if send_at and send_at > now else EmailStatus.QUEUED


def _email_new(
    *,
    client: Client,
    to: Sequence[str],
    tags: Sequence[str],
    from_email: str | None,
    topic: str = "",
    transactional: bool | None = None,
    **fields,
) -> EmailJob:
    """An unsaved email, with what every way in fills the same way: normalised recipient
    addresses, the attempts limit in force, whether it is transactional (and may carry its own
    List-Unsubscribe headers)."""
    to_addresses = [address_spec(address) for address in to]
    transactional = email_is_transactional(topic=topic, transactional=transactional)
    check_unsubscribe_headers(headers=fields.get("headers") or {}, transactional=transactional)
    recipients = len(to) + len(fields.get("cc") or ()) + len(fields.get("bcc") or ())
    if not transactional and recipients > 1:
        # Its List-Unsubscribe link names one address: with several recipients, any of them
        # would unsubscribe the first. Send one email per recipient (a batch does).
        raise ValidationFailed(
            "A non-transactional email (with a topic, or transactional false) goes to exactly "
            "one recipient, whom its unsubscribe link names; send a batch instead.",
            field="to",
        )
    api_key = fields.get("api_key")
    if api_key is not None and api_key.is_test:
        # A test key's email goes the whole way, to the simulator instead of a real provider.
        fields["providers"] = [SIMULATOR]
    return EmailJob(
        topic=topic,
        transactional=transactional,
        client=client,
        from_email=from_email or "",
        to=list(to),
        to_addresses=to_addresses,
        recipient=to_addresses[0],
        tags=list(tags),
        max_attempts=conf.max_attempts(),
        # The X-Request-ID of the API request creating it (set by RequestLogMiddleware).
        request_id=current_request_id(),
        **fields,
    )


def _template_accept(slug: str, context: dict) -> tuple:
    """The active template, its current version and the subject it renders with `context`.

    The subject is rendered now: the API shows it at once, and a subject that cannot render
    with this context is the caller's 400, not a failure later in the worker.
    """
    template = template_get_active(slug=slug)
    template_check_context(template=template, context=context)
    version = template_current_version(template=template)
    return template, version, _accept_subject(version or template, context, field="context")


@dataclass(frozen=True)
class BatchContent:
    """What every email of a batch says: a template (its current version, pinned), or inline
    `subject` with `html`/`text` rendered for each recipient when the batch is accepted."""

    template: EmailTemplate | None = None
    version: EmailTemplateVersion | None = None
    subject: str = ""
    html: str = ""
    text: str = ""


def batch_content(
    *, template: str | None = None, subject: str = "", html: str = "", text: str = ""
) -> BatchContent:
    """The content of a batch: the active template of a slug, or inline content (a subject with
    html and/or text); ValidationFailed naming the field otherwise."""
    if template:
        template_obj = template_get_active(slug=template)
        return BatchContent(
            template=template_obj, version=template_current_version(template=template_obj)
        )
    if not subject or not (html or text):
        raise ValidationFailed(
            "Give either 'template' (with 'context') or 'subject' with 'html' and/or 'text'.",
            field="template",
        )
    return BatchContent(subject=subject, html=html, text=text)


def inline_content_render(
    *,
    subject: str,
    html: str,
    text: str,
    context: dict,
    client_id: int,
    address: str,
    topic: str = "",
    transactional: bool | None = None,
) -> RenderedContent:
    """Inline content rendered for one recipient, stored as it is sent; a non-transactional
    email (a topic's) gets its one-click `unsubscribe_url` in the context, as a template's does
    when the worker renders it."""
    if not email_is_transactional(topic=topic, transactional=transactional):
        link = unsubscribe_url(
            UnsubscribeToken(address=address_spec(address), client_id=client_id, topic=topic)
        )
        context = {**context, "unsubscribe_url": link}
    return render_content(subject=subject, html=html, text=text, context=context)


def _inline_accept(
    content: BatchContent,
    client: Client,
    context: dict,
    address: str,
    topic: str,
    transactional: bool | None,
    *,
    field: str,
) -> RenderedContent:
    """Inline content rendered for one recipient, or ValidationFailed naming `field`."""
    try:
        return inline_content_render(
            subject=content.subject,
            html=content.html,
            text=content.text,
            context=context,
            client_id=client.pk,
            address=address,
            topic=topic,
            transactional=transactional,
        )
    except TemplateRenderError as exc:
        raise ValidationFailed(
            f"The content cannot be rendered with this context: {exc.message}", field=field
        ) from None


def _batch_rendered(
    content: BatchContent,
    client: Client,
    shared_context: dict,
    recipients: Sequence["BatchRecipient"],
    *,
    topic: str,
    transactional: bool | None,
    skip_invalid: bool,
) -> list[tuple["BatchRecipient", dict, RenderedContent]]:
    """Each recipient with their merged context and what is stored of their content (the
    rendered subject of a template, or the rendered inline content), after checking their
    context and addresses.

    The first bad recipient is a ValidationFailed naming its index, and nothing is stored; with
    `skip_invalid` (a schedule's run, which nobody is waiting on) it is left out instead.
    """
    rendered = []
    for index, recipient in enumerate(recipients):
        field = f"recipients[{index}].context"
        merged = {**shared_context, **recipient.context}
        try:
            if content.template is not None:
                template_check_context(template=content.template, context=merged, field=field)
                source = content.version or content.template
                parts = RenderedContent(_accept_subject(source, merged, field=field), "", "")
            else:
                parts = _inline_accept(
                    content, client, merged, recipient.to[0], topic, transactional, field=field
                )
            check_recipient_count(to=recipient.to, cc=[], bcc=[], field=f"recipients[{index}].to")
        except ValidationFailed:
            if not skip_invalid:
                raise
            continue
        rendered.append((recipient, merged, parts))
    return rendered


def _batch_chunk_jobs(batch: Batch, emails: list[EmailJob]) -> list[DeliveryJob]:
    """A scheduled batch's release jobs: one per chunk, in the order the batch was given (each
    email is told its chunk's job id)."""
    chunk_size = conf.batch_chunk_size()
    jobs = []
    for start in range(0, len(emails), chunk_size):
        job_id = f"batch-{batch.id.hex}-{start // chunk_size}"
        chunk = emails[start : start + chunk_size]
        for email in chunk:
            email.rq_job_id = job_id
        ids = tuple(str(email.id) for email in chunk)
        jobs.append(DeliveryJob(job_id, ids, batch.priority, batch.send_at))
    return jobs


def email_create(
    *,
    client: Client,
    to: list[str],
    api_key: ApiKey | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    from_email: str | None = None,
    template: str | None = None,
    context: dict | None = None,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    priority: str = Priority.DEFAULT,
    send_at: datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict | None = None,
    headers: dict | None = None,
    attachments: Iterable[AttachmentInput] = (),
    created_by_user: AbstractBaseUser | None = None,
    providers: Sequence[str] = (),
    topic: str = "",
    transactional: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
    secret_context_keys: Sequence[str] = (),
) -> EmailJob:
    """Store one email in the outbox and ask for its delivery once the row is committed.

    `secret_context_keys` name context values (a one-time code) that are masked in everything
    stored and shown but the message itself (see services.redaction).
    """
    # Long only by its keywords: one per field a caller may set, passed on to the row.
    context = context or {}
    attachments = list(attachments)
    check_recipient_count(to=list(to), cc=list(cc), bcc=list(bcc))
    sender_check(client=client, from_email=from_email, reply_to=reply_to)
    template_obj = template_version = None
    if template:
        template_obj, template_version, subject = _template_accept(template, context)
    if secret_context_keys:
        if not template:
            raise ValidationFailed("Secret context keys need a 'template'.", field="template")
        # The subject rendered at acceptance is stored and shown: it must not carry the secret.
        subject = text_redact(subject, secret_values(context=context, keys=secret_context_keys))
    elif not template and (not subject or not (html or text)):
        raise ValidationFailed(
            "Give either 'template' (with 'context') or 'subject' with 'html' and/or 'text'.",
            field="template",
        )
    email = _email_new(
        client=client,
        api_key=api_key,
        to=to,
        status=_initial_status(send_at, timezone.now()),
        send_at=send_at,
        priority=priority,
        from_email=from_email,
        tags=tags,
        metadata=metadata or {},
        template=template_obj,
        template_version=template_version,
        context=context,
        subject=subject or "",
        cc=list(cc),
        bcc=list(bcc),
        reply_to=list(reply_to),
        headers=headers or {},
        html=html or "",
        text=text or "",
        created_by_user=created_by_user,
        providers=list(providers),
        topic=topic,
        transactional=transactional,
        **tracking_flags(track_opens=track_opens, track_clicks=track_clicks, template=template_obj),
        secret_context_keys=list(secret_context_keys),
    )
    if email.status == EmailStatus.SCHEDULED:
        email.rq_job_id = email_job_id(email.id)
    # One INSERT commits on its own: a transaction (two more round trips per request) is opened
    # only when attachments must be stored with the email. Inside a caller's transaction, the
    # drain or the job below still waits for that transaction's commit.
    with transaction.atomic() if attachments else nullcontext():
        insert_one(email)
        EmailAttachment.objects.bulk_create(
            EmailAttachment(
                email=email,
                filename=item.filename,
                mimetype=item.mimetype,
                content=item.content,
                content_id=item.content_id,
            )
            for item in attachments
        )
    # Counted in the same Redis round trip that requests the delivery.
    counted = emails_accepted_increments(queued={email.priority: 1}, stored=1).queue_on
    if email.status == EmailStatus.SCHEDULED:
        deliveries_enqueue_on_commit(
            [DeliveryJob(email.rq_job_id, (str(email.id),), email.priority, email.send_at)],
            also=counted,
        )
    else:
        # Queued emails are claimed by their priority's drain job, oldest first.
        drains_request_on_commit([email.priority], also=counted)
    return email


@dataclass(frozen=True)
class BatchRecipient:
    """One recipient of a batch with the context and metadata only they get."""

    to: list[str]
    context: dict
    metadata: dict


@transaction.atomic
def batch_create(
    *,
    client: Client,
    recipients: Sequence[BatchRecipient],
    template: str | None = None,
    subject: str = "",
    html: str = "",
    text: str = "",
    api_key: ApiKey | None = None,
    context: dict | None = None,
    priority: str = Priority.DEFAULT,
    send_at: datetime | None = None,
    tags: Sequence[str] = (),
    from_email: str | None = None,
    topic: str = "",
    transactional: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
) -> Batch:
    """Store a batch and its emails in bulk; ask for a drain, or schedule its chunk jobs.

    Its content is a template, or inline `subject` with `html`/`text` rendered for each
    recipient now (see `batch_content`).
    """
    if not recipients:
        raise ValidationFailed("A batch needs at least one recipient.", field="recipients")
    if len(recipients) > conf.batch_max():
        raise ValidationFailed(
            f"Too many recipients: {len(recipients)} (the limit is {conf.batch_max()}).",
            field="recipients",
        )
    sender_check(client=client, from_email=from_email)
    shared_context = context or {}
    content = batch_content(template=template, subject=subject, html=html, text=text)
    rendered = _batch_rendered(
        content,
        client,
        shared_context,
        recipients,
        topic=topic,
        transactional=transactional,
        skip_invalid=False,
    )
    batch = Batch.objects.create(
        client=client,
        template=content.template,
        context=shared_context,
        priority=priority,
        send_at=send_at,
        tags=list(tags),
        count=len(recipients),
    )
    _batch_insert(
        batch,
        content,
        rendered,
        api_key=api_key,
        from_email=from_email,
        topic=topic,
        transactional=transactional,
        tracking=tracking_flags(
            track_opens=track_opens, track_clicks=track_clicks, template=content.template
        ),
    )
    return batch


@transaction.atomic
def batch_emails_add(
    *,
    batch: Batch,
    content: BatchContent,
    recipients: Sequence[BatchRecipient],
    from_email: str | None = None,
    topic: str = "",
    transactional: bool | None = None,
) -> int:
    """Add emails to a batch in bulk (a schedule's run, chunk by chunk: no MAILQUEUE_BATCH_MAX)
    and ask for their delivery; returns how many were added.

    A recipient whose context the content cannot render with is left out (nobody waits on a
    run to be told); the batch's `count` grows by the emails added.
    """
    sender_check(client=batch.client, from_email=from_email)
    rendered = _batch_rendered(
        content,
        batch.client,
        batch.context,
        recipients,
        topic=topic,
        transactional=transactional,
        skip_invalid=True,
    )
    if rendered:
        _batch_insert(
            batch,
            content,
            rendered,
            api_key=None,
            from_email=from_email,
            topic=topic,
            transactional=transactional,
            tracking=tracking_flags(track_opens=None, track_clicks=None, template=content.template),
        )
        Batch.objects.filter(pk=batch.pk).update(count=models.F("count") + len(rendered))
    return len(rendered)


def _batch_insert(
    batch: Batch,
    content: BatchContent,
    rendered: list[tuple[BatchRecipient, dict, RenderedContent]],
    *,
    api_key: ApiKey | None,
    from_email: str | None,
    topic: str,
    transactional: bool | None,
    tracking: dict,
) -> None:
    """INSERT a batch's emails in one statement; ask for a drain, or schedule chunk jobs."""
    status = _initial_status(batch.send_at, timezone.now())
    emails = [
        _email_new(
            client=batch.client,
            api_key=api_key,
            to=recipient.to,
            status=status,
            send_at=batch.send_at,
            priority=batch.priority,
            from_email=from_email,
            tags=batch.tags,
            metadata=recipient.metadata,
            template=content.template,
            template_version=content.version,
            context=context,
            subject=parts.subject,
            html=parts.html,
            text=parts.text,
            batch=batch,
            topic=topic,
            transactional=transactional,
            **tracking,
        )
        for recipient, context, parts in rendered
    ]
    jobs = _batch_chunk_jobs(batch, emails) if status == EmailStatus.SCHEDULED else []
    insert_rows(EmailJob, emails)
    counted = emails_accepted_increments(queued={batch.priority: len(emails)}, stored=len(emails))
    if jobs:
        deliveries_enqueue_on_commit(jobs, also=counted.queue_on)
    else:
        # Ids are time-ordered: the drain claims the batch in the order it was given.
        drains_request_on_commit([batch.priority], also=counted.queue_on)


def _record_status_events(email_ids: Iterable[UUID], event_type: str, description: str) -> None:
    events_record(
        events=[
            NewEvent(email_id=email_id, event_type=event_type, description=description)
            for email_id in email_ids
        ]
    )


@dataclass
class BulkResult:
    """How many emails a bulk action changed, and how many it matched but left as they were."""

    changed: int = 0
    skipped: int = 0
    changed_ids: list[UUID] = field(default_factory=list)


@dataclass(frozen=True)
class _Transition:
    """A checked status change for many emails at once, and the event each changed email gets."""

    from_statuses: tuple[str, ...]
    to_status: str
    # Columns set beside `status` and `updated_at`.
    assignments: dict[str, Any]
    event_type: str
    description: str


_CANCEL = _Transition(
    from_statuses=CANCELLABLE,
    to_status=EmailStatus.CANCELLED,
    assignments={"next_attempt_at": None},
    event_type=EventType.CANCELLED,
    description="Cancelled.",
)
# A retried email starts over: all its attempts, no error, no job of its own (a drain claims it).
_RETRY = _Transition(
    from_statuses=RETRYABLE,
    to_status=EmailStatus.QUEUED,
    assignments={
        "send_at": None,
        "next_attempt_at": None,
        "lease_expires_at": None,
        "attempts": 0,
        **error_fields(error_class="", message=""),
        "rq_job_id": "",
    },
    event_type=EventType.QUEUED,
    description="Queued again by a retry.",
)

# True for an email (alias `email`) that has only `to` recipients, each with a suppression entry
# that applies to it (the rule of selectors.suppressions: its client's or service-wide, its topic
# or every topic, unsubscribes only for non-transactional email; erased addresses are stored
# hashed). cc and bcc are stored unparsed, so an email with either is never judged suppressed.
_ALL_RECIPIENTS_SUPPRESSED = (
    "(email.cc = '[]'::jsonb AND email.bcc = '[]'::jsonb "
    "AND jsonb_array_length(email.to_addresses) > 0 "
    "AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(email.to_addresses) AS r(address) "
    "WHERE NOT EXISTS (SELECT 1 FROM {suppressions} AS s "
    "WHERE s.address IN (r.address, %s || encode(sha256(convert_to(r.address, 'UTF8')), 'hex')) "
    "AND (s.client_id IS NULL OR s.client_id = email.client_id) "
    "AND (s.topic = '' OR s.topic = email.topic) "
    "AND (s.reason <> %s OR NOT email.transactional))))"
)


def _emails_transition(
    *, emails: QuerySet[EmailJob], transition: _Transition, skip_suppressed: bool
) -> tuple[int, list[dict]]:
    """Apply a transition to the emails of a queryset still in one of its from-statuses, and
    record its event for each; return how many emails the queryset matched and the changed
    rows (pk, priority, rq_job_id)."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        matched, rows = _transition_postgresql(emails, transition, skip_suppressed, now)
    else:
        matched, rows = _transition_with_orm(emails, transition, skip_suppressed, now)
    # A generator: nothing is built while no client has a webhook endpoint.
    webhooks_dispatch(
        {
            "email_id": row["pk"],
            "event_type": transition.event_type,
            "occurred_at": now,
            "description": transition.description,
        }
        for row in rows
    )
    return matched, rows


def _transition_postgresql(
    emails: QuerySet[EmailJob], transition: _Transition, skip_suppressed: bool, now: datetime
) -> tuple[int, list[dict]]:
    """One statement: the conditional UPDATE ... RETURNING and the events' INSERT ... SELECT.

    Each row is updated only if it is still in the status the queryset saw it in (PostgreSQL
    re-checks a row changed by a concurrent transaction), so a row that moved meanwhile is
    skipped rather than overwritten.
    """
    quote = connection.ops.quote_name
    matched = emails.order_by().values_list("pk", "status")
    matched_sql, matched_params = matched.query.sql_with_params()
    changes = {"status": transition.to_status, **transition.assignments, "updated_at": now}
    assignments = ", ".join(f"{quote(name)} = %s" for name in changes)
    guard, guard_params = "", []
    if skip_suppressed:
        suppressions = quote(Suppression._meta.db_table)
        guard = " AND NOT " + _ALL_RECIPIENTS_SUPPRESSED.format(suppressions=suppressions)
        guard_params = [HASHED_ADDRESS_PREFIX, SuppressionReason.UNSUBSCRIBE]
    event_columns, event_values, event_params = _event_select(transition, now)
    # Only quoted names, the queryset's own SQL and placeholders are interpolated.
    sql = (
        f"WITH matched (id, status) AS ({matched_sql}), "  # noqa: S608
        f"changed AS (UPDATE {quote(EmailJob._meta.db_table)} AS email SET {assignments} "
        "FROM matched WHERE email.id = matched.id AND email.status = matched.status "
        f"AND email.status = ANY(%s){guard} "
        "RETURNING email.id, email.priority, email.rq_job_id), "
        f"recorded AS (INSERT INTO {quote(TrackingEvent._meta.db_table)} ({event_columns}) "
        f"SELECT {event_values} FROM changed) "
        "SELECT (SELECT count(*) FROM matched), changed.id, changed.priority, changed.rq_job_id "
        "FROM (SELECT 1) AS one LEFT JOIN changed ON true"
    )
    params = [
        *matched_params,
        *changes.values(),
        list(transition.from_statuses),
        *guard_params,
        *event_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        result = cursor.fetchall()
    rows = [
        {"pk": pk, "priority": priority, "rq_job_id": rq_job_id}
        for _, pk, priority, rq_job_id in result
        if pk is not None
    ]
    return result[0][0], rows


def _event_select(transition: _Transition, now: datetime) -> tuple[str, str, list]:
    """The event table's columns, and the SELECT list (over `changed`) that fills them."""
    given = {
        "event_type": transition.event_type,
        "description": transition.description,
        "occurred_at": now,
        "created_at": now,
    }
    columns, values, params = [], [], []
    for model_field in TrackingEvent._meta.concrete_fields:
        if isinstance(model_field, models.AutoField):
            continue
        columns.append(connection.ops.quote_name(model_field.column))
        if model_field.attname == "email_id":
            values.append("changed.id")
        elif isinstance(model_field, models.JSONField):
            values.append("%s::jsonb")
            params.append(json_dumps(given.get(model_field.attname, model_field.get_default())))
        else:
            values.append("%s")
            params.append(given.get(model_field.attname, model_field.get_default()))
    return ", ".join(columns), ", ".join(values), params


def _transition_with_orm(
    emails: QuerySet[EmailJob], transition: _Transition, skip_suppressed: bool, now: datetime
) -> tuple[int, list[dict]]:
    """The same change through the ORM (databases other than PostgreSQL, e.g. `make run`)."""
    matched = emails.count()
    candidates = list(
        emails.select_for_update()
        .filter(status__in=transition.from_statuses)
        .only(*_SUPPRESSION_FIELDS, "status", "priority", "rq_job_id")
    )
    if skip_suppressed and candidates:
        suppressions_for_emails(emails=candidates)
        candidates = [email for email in candidates if not _all_recipients_suppressed(email)]
    ids = [email.pk for email in candidates]
    changes = {"status": transition.to_status, **transition.assignments, "updated_at": now}
    for start in range(0, len(ids), 500):
        EmailJob.objects.filter(
            pk__in=ids[start : start + 500], status__in=transition.from_statuses
        ).update(**changes)
    events_record(
        events=[
            NewEvent(
                email_id=pk,
                event_type=transition.event_type,
                description=transition.description,
                occurred_at=now,
            )
            for pk in ids
        ]
    )
    rows = [{"pk": e.pk, "priority": e.priority, "rq_job_id": e.rq_job_id} for e in candidates]
    return matched, rows


# What deciding whether an email's recipients are all suppressed reads.
_SUPPRESSION_FIELDS = ("client_id", "to", "to_addresses", "cc", "bcc", "topic", "transactional")


def _all_recipients_suppressed(email: EmailJob) -> bool:
    """_ALL_RECIPIENTS_SUPPRESSED for an email whose suppression entries are attached."""
    if email.cc or email.bcc or not email.to_addresses:
        return False
    return set(email.to_addresses) <= set(email_suppressed_recipients(email=email))


@transaction.atomic
def emails_cancel_matching(*, emails: QuerySet[EmailJob]) -> BulkResult:
    """Cancel every scheduled, queued or retrying email of a queryset with one conditional
    UPDATE; `skipped` counts the queryset's other emails (e.g. claimed by a worker meanwhile)."""
    matched, rows = _emails_transition(emails=emails, transition=_CANCEL, skip_suppressed=False)
    # A cancelled email is never rendered again: its secret context values (if any) can go.
    emails_context_redact(email_ids=[row["pk"] for row in rows])
    # Jobs that carry only this email can go; shared jobs (batch chunks, drains) skip cancelled
    # rows.
    own_jobs = [
        row["rq_job_id"]
        for row in rows
        if row["rq_job_id"].startswith(email_job_prefix(row["pk"]))
        or row["rq_job_id"].startswith(f"retry-{row['pk'].hex}-")
    ]
    if own_jobs:
        transaction.on_commit(lambda: delivery_jobs_cancel(own_jobs))
    ids = [row["pk"] for row in rows]
    return BulkResult(changed=len(ids), skipped=matched - len(ids), changed_ids=ids)


@transaction.atomic
def emails_retry_matching(
    *, emails: QuerySet[EmailJob], skip_suppressed: bool = False
) -> BulkResult:
    """Queue every failed or cancelled email of a queryset again, with one conditional UPDATE.

    They are queued like new emails and claimed by their priority's drain (in the order they
    were first accepted), so retrying 100,000 costs one statement and one Redis call. `skipped`
    counts the queryset's other emails: not failed or cancelled when the UPDATE ran, and with
    `skip_suppressed` those whose every recipient is suppressed (a send would only mark them
    suppressed; they stay as they are). Emails whose secrets (a one-time code) were masked
    once they were final are never retried, and count as skipped: they would send the mask.
    """
    with_secrets = emails.exclude(secret_context_keys=[])
    emails = emails.filter(secret_context_keys=[])
    matched, rows = _emails_transition(
        emails=emails, transition=_RETRY, skip_suppressed=skip_suppressed
    )
    matched += with_secrets.filter(status__in=_RETRY.from_statuses).count()
    if rows:
        drains_request_on_commit(
            sorted({row["priority"] for row in rows}),
            also=emails_accepted_increments(
                queued=Counter(row["priority"] for row in rows), stored=0
            ).queue_on,
        )
    ids = [row["pk"] for row in rows]
    return BulkResult(changed=len(ids), skipped=matched - len(ids), changed_ids=ids)


def emails_cancel_many(*, email_ids: Iterable[UUID]) -> BulkResult:
    """Cancel every scheduled, queued or retrying email among the ids (see
    emails_cancel_matching); unknown ids count as skipped."""
    email_ids = list(email_ids)
    result = emails_cancel_matching(emails=EmailJob.objects.filter(pk__in=email_ids))
    result.skipped = len(email_ids) - result.changed
    return result


def emails_retry_many(*, email_ids: Iterable[UUID]) -> BulkResult:
    """Queue every failed or cancelled email among the ids again (see emails_retry_matching);
    unknown ids count as skipped."""
    email_ids = list(email_ids)
    result = emails_retry_matching(emails=EmailJob.objects.filter(pk__in=email_ids))
    result.skipped = len(email_ids) - result.changed
    return result


def email_cancel(*, email: EmailJob) -> EmailJob:
    """Cancel an email that has not started sending; InvalidTransition (409) otherwise."""
    if not emails_cancel_many(email_ids=[email.pk]).changed:
        email.refresh_from_db()
        raise InvalidTransition(
            f"Cannot cancel an email that is {email.status}; only scheduled, queued or "
            "retrying emails can be cancelled."
        )
    email.refresh_from_db()
    return email


def email_retry(*, email: EmailJob) -> EmailJob:
    """Queue a failed or cancelled email again, to be sent as soon as possible."""
    if email.secret_context_keys:
        raise InvalidTransition(
            "Cannot retry an email that carried a one-time code (it was masked once the email "
            "was final): ask for a new code."
        )
    if not emails_retry_many(email_ids=[email.pk]).changed:
        email.refresh_from_db()
        raise InvalidTransition(
            f"Cannot retry an email that is {email.status}; only failed or cancelled emails "
            "can be retried."
        )
    email.refresh_from_db()
    return email


# Emails made in the admin (test sends, released captures) belong to this client.
ADMIN_CLIENT_NAME = "mailqueue-admin"


def admin_sender_client() -> Client:
    """The client that owns emails created from the admin."""
    client, _ = Client.objects.get_or_create(name=ADMIN_CLIENT_NAME)
    return client


def template_send_test(
    *,
    template: EmailTemplate,
    to: str,
    user: AbstractBaseUser | None = None,
    api_key: ApiKey | None = None,
) -> EmailJob:
    """Send a template with its sample context to one address, queued at high priority; the
    email belongs to the API key's client, or to the admin's own client."""
    return email_create(
        client=api_key.client if api_key is not None else admin_sender_client(),
        api_key=api_key,
        to=[to],
        template=template.slug,
        context=template.sample_context,
        priority=Priority.HIGH,
        tags=["test-send"],
        metadata={"test_send": True},
        created_by_user=user,
    )


@transaction.atomic
def captured_message_release(
    *, captured: CapturedMessage, user: AbstractBaseUser | None = None
) -> EmailJob:
    """Send a captured message for real: a new email with the same content, through the release
    providers (MAILQUEUE_RELEASE_PROVIDERS or the real providers of EMAIL_PROVIDERS)."""
    # Lock the capture: a double click must not send the real email twice.
    captured = CapturedMessage.objects.select_for_update().get(pk=captured.pk)
    if captured.released_as_id:
        raise InvalidTransition("This message was already released.")
    if (
        captured.email_id
        and EmailJob.objects.filter(pk=captured.email_id, providers=[SIMULATOR]).exists()
    ):
        raise InvalidTransition("A test key's message is never released to a real provider.")
    providers = conf.release_providers()
    if not providers:
        raise ValidationFailed(
            "No real provider to release to: set MAILQUEUE_RELEASE_PROVIDERS or add one to "
            "EMAIL_PROVIDERS besides capture.",
            field="providers",
        )
    original = captured.email
    if original is None:
        raise ValidationFailed("The email this message was captured from no longer exists.")
    email = email_create(
        client=original.client,
        to=original.to,
        cc=original.cc,
        bcc=original.bcc,
        reply_to=original.reply_to,
        from_email=original.from_email or None,
        subject=original.subject,
        html=original.html,
        text=original.text,
        priority=Priority.HIGH,
        tags=original.tags,
        metadata={**original.metadata, "released_from": str(original.pk)},
        headers=original.headers,
        attachments=[
            AttachmentInput(
                filename=item.filename,
                content=bytes(item.content),
                mimetype=item.mimetype,
                content_id=item.content_id,
            )
            for item in original.attachments.all()
        ],
        created_by_user=user,
        providers=providers,
        track_opens=original.track_opens,
        track_clicks=original.track_clicks,
        # Released as it was: a topic's email keeps its unsubscribe link and suppressions.
        topic=original.topic,
        transactional=original.transactional if not original.topic else None,
    )
    CapturedMessage.objects.filter(pk=captured.pk).update(released_as=email)
    return email
