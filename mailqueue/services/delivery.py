"""The worker side: claim emails, render them, hand them to providers, record the outcomes.

A delivery job claims a chunk of emails in one statement, then overlaps the network waits of
up to MAILQUEUE_WORKER_CONCURRENCY sends at a time (threads with their own provider
connections; they never touch the database), while the job's own thread writes the outcomes
set-based, a small group at a time (at most OUTCOME_GROUP_SIZE emails or OUTCOME_GROUP_SECONDS
of outcomes are held before they are written: a crash loses little).

A worker asked to stop (its first SIGTERM, see worker.py) lets the sends under way finish and
writes their outcomes, and puts the rest of its claim back to `queued` at once for another worker.
"""

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import encoders
from email.mime.base import MIMEBase
from uuid import UUID, uuid4

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import SafeMIMEMultipart
from django.db import DatabaseError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq.timeouts import BaseTimeoutException

from mailqueue import conf, priorities, rate_limits
from mailqueue.db import select_columns, select_instances
from mailqueue.dkim import keyring_refresh as dkim_keyring_refresh
from mailqueue.errors import DeliveryError, MailqueueError
from mailqueue.metrics.recording import rate_limit_waits_count
from mailqueue.models import (
    CapturedMessage,
    DeliveryAttempt,
    EmailAttachment,
    EmailJob,
    EmailStatus,
    QueuePause,
)
from mailqueue.providers import (
    Provider,
    configured_providers,
    get_provider,
    provider_call_permit,
    provider_report_failure,
    provider_report_refusal,
    provider_report_success,
    providers_in_service,
    providers_wait_seconds,
)
from mailqueue.scheduling import (
    DeliveryJob,
    deliveries_enqueue_on_commit,
    drain_started,
    drains_request,
    drains_request_on_commit,
    email_job_id,
    jobs_waiting,
)
from mailqueue.selectors.suppressions import email_suppressed_recipients, suppressions_for_emails
from mailqueue.services.dead_letters import error_fields
from mailqueue.services.outcomes import LEASE_LOST, Decision, decisions_record
from mailqueue.services.queues import emails_hold_paused
from mailqueue.services.redaction import email_secret_values, text_redact
from mailqueue.services.suppressions import (
    email_decide_suppressed,
    email_suppression_events,
    message_drop_recipients,
)
from mailqueue.unsubscribe import email_render_context, email_unsubscribe_headers
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.rendering import RenderedContent, render_content
from tracking.engagement import content_track
from tracking.models import EventType
from tracking.services import NewEvent

logger = logging.getLogger(__name__)

# An email whose delivery raised an unexpected exception (a bug): it stays `sending` until the
# sweeper takes it back when its lease ends.
CRASHED = "crashed"
# Outcomes held in memory before they are written: a worker killed between a provider's
# acceptance and this write loses at most the emails in flight plus this many outcomes.
OUTCOME_GROUP_SIZE = 10
OUTCOME_GROUP_SECONDS = 0.25
# Longest a delivery waits on its send threads before looking whether a stop was requested: the
# emails it will not send go back this soon even while a provider takes its whole timeout.
STOP_CHECK_SECONDS = 0.1

# Set by the worker's first SIGTERM or SIGINT; a process that is stopping never starts again.
# Only ever set, never waited on: Event.set() is safe in a signal handler as long as the main
# thread is not inside a method of the same Event.
_stop_requested = threading.Event()


def deliveries_stop() -> None:
    """Ask this process's deliveries to finish the sends under way and release the rest."""
    _stop_requested.set()


def claimable_filter(now: datetime) -> Q:
    """Emails a worker may take now: queued, or scheduled/retrying whose time has come."""
    return (
        Q(status=EmailStatus.QUEUED, send_at__isnull=True)
        | Q(status__in=(EmailStatus.QUEUED, EmailStatus.SCHEDULED), send_at__lte=now)
        | Q(status=EmailStatus.RETRYING, next_attempt_at__lte=now)
    )


def _claim(queryset, *, now: datetime, job_id: str) -> list[EmailJob]:
    """Move the rows the queryset selects to `sending` under one claim token; load them to send."""
    token = uuid4()
    changes = {
        "status": EmailStatus.SENDING,
        "lease_expires_at": now + timedelta(seconds=conf.lease_seconds()),
        "claim_token": token,
        "next_attempt_at": None,
        "rq_job_id": job_id,
        "updated_at": now,
    }
    if connection.vendor == "postgresql":
        emails = _claim_postgresql(queryset, changes)
    else:
        with transaction.atomic():
            # The status condition in the UPDATE keeps anything claimed meanwhile from being
            # claimed twice.
            ids = list(queryset.select_for_update(skip_locked=True).values_list("pk", flat=True))
            if not ids or not EmailJob.objects.filter(claimable_filter(now), pk__in=ids).update(
                **changes
            ):
                return []
        # By token, not by id: what this claim moved, even where row locks do not exist.
        emails = list(EmailJob.objects.filter(claim_token=token))
    if emails:
        _load_for_sending(emails)
    return emails


def _claim_postgresql(queryset, changes: dict) -> list[EmailJob]:
    """The claim as one statement: lock the rows (SKIP LOCKED, so a worker claiming at the same
    moment takes other rows), move them, and return them with whether they have attachments.

    PostgreSQL re-checks the queryset's conditions on a row that another transaction changed
    before the lock was taken, so a row claimed or cancelled meanwhile is left alone.
    """
    picker, picker_params = queryset.values("pk").query.sql_with_params()
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(name)} = %s" for name in changes)
    attachments = quote(EmailAttachment._meta.db_table)
    # Only quoted names and the ORM's own compiled SQL go into the text; values are parameters.
    sql = (
        f"UPDATE {quote(EmailJob._meta.db_table)} AS email SET {assignments} "  # noqa: S608
        f"FROM ({picker} FOR UPDATE SKIP LOCKED) AS picked WHERE email.id = picked.pk "
        f"RETURNING {select_columns(EmailJob, 'email')}, "
        f"EXISTS (SELECT 1 FROM {attachments} WHERE email_id = email.id)"
    )
    params = [
        EmailJob._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in changes.items()
    ]
    emails = []
    rows = select_instances(EmailJob, sql, [*params, *picker_params], extra=1)
    for email, (has_attachments,) in rows:
        if not has_attachments:
            email.attachment_rows = []
        emails.append(email)
    return emails


# Template versions never change once written: each worker process keeps the ones it used.
_versions: dict[int, EmailTemplateVersion] = {}
_VERSIONS_KEPT = 256


def _load_for_sending(emails: list[EmailJob]) -> None:
    """Attach what rendering and building needs, a query per kind for the whole chunk: template
    versions (cached per process), unversioned templates, attachments, suppression entries."""
    wanted = {e.template_version_id for e in emails if e.template_version_id} - _versions.keys()
    if wanted:
        if len(_versions) + len(wanted) > _VERSIONS_KEPT:
            _versions.clear()
        _versions.update(EmailTemplateVersion.objects.in_bulk(list(wanted)))
    unversioned = {e.template_id for e in emails if e.template_id and not e.template_version_id}
    templates = EmailTemplate.objects.in_bulk(list(unversioned)) if unversioned else {}
    attachments: dict = {}
    # The PostgreSQL claim already knows which emails have none.
    wanted = [e.pk for e in emails if not hasattr(e, "attachment_rows")]
    for attachment in EmailAttachment.objects.filter(email_id__in=wanted) if wanted else ():
        attachments.setdefault(attachment.email_id, []).append(attachment)
    for email in emails:
        if email.template_version_id:
            EmailJob.template_version.field.set_cached_value(
                email, _versions[email.template_version_id]
            )
        elif email.template_id:
            EmailJob.template.field.set_cached_value(email, templates[email.template_id])
        if not hasattr(email, "attachment_rows"):
            email.attachment_rows = attachments.get(email.pk, [])
    suppressions_for_emails(emails=emails)


def emails_claim(*, email_ids: list[str], job_id: str = "") -> list[EmailJob]:
    """Move due emails among the ids to `sending` under a lease, in the ids' order."""
    now = timezone.now()
    # The pause is read inside the claim statement: no query of its own.
    queryset = EmailJob.objects.filter(claimable_filter(now), pk__in=email_ids).filter(
        ~Exists(QueuePause.objects.filter(priority=OuterRef("priority")))
    )
    claimed = _claim(queryset, now=now, job_id=job_id)
    # Sent in the job's order (the order they were accepted in, for a batch).
    position = {str(email_id): index for index, email_id in enumerate(email_ids)}
    return sorted(claimed, key=lambda email: position.get(str(email.pk), len(position)))


def emails_claim_queued(*, priority: str, limit: int, job_id: str = "") -> list[EmailJob]:
    """Claim up to `limit` queued emails of one priority, oldest first (ids are time-ordered);
    none while the priority is paused."""
    now = timezone.now()
    queryset = (
        EmailJob.objects.filter(status=EmailStatus.QUEUED, priority=priority)
        .filter(Q(send_at__isnull=True) | Q(send_at__lte=now))
        # Read inside the claim statement (a one-time subplan): no query of its own.
        .filter(~Exists(QueuePause.objects.filter(priority=priority)))
        .order_by("pk")[:limit]
    )
    return sorted(_claim(queryset, now=now, job_id=job_id), key=lambda email: email.pk)


def email_hold_lease(*, email: EmailJob) -> bool:
    """Whether this worker still owns a claimed email; renews the lease once half of it is used.

    A chunk can take longer than one lease (a provider timing out on every email); without this,
    the sweeper would hand an email to another worker while this one is about to send it.
    """
    now = timezone.now()
    lease = timedelta(seconds=conf.lease_seconds())
    if email.lease_expires_at and email.lease_expires_at - now > lease / 2:
        return True
    renewed_until = now + lease
    renewed = EmailJob.objects.filter(
        pk=email.pk, status=EmailStatus.SENDING, claim_token=email.claim_token
    ).update(lease_expires_at=renewed_until)
    if renewed:
        email.lease_expires_at = renewed_until
    return bool(renewed)


def emails_release(*, emails: list[EmailJob]) -> int:
    """Put claimed emails that were never handed to a provider back to `queued` at once.

    Only rows still `sending` under the claim that took them move, so one taken back by the
    sweeper and claimed by another worker meanwhile is left alone. Scheduled and retrying ones
    become `queued` too (their time had come when they were claimed). Not an attempt: the count
    of attempts stays. A drain is requested for their priorities; if Redis cannot take it, the
    sweeper requests it.
    """
    claims: dict[UUID, list] = {}
    for email in emails:
        if email.claim_token is not None:
            claims.setdefault(email.claim_token, []).append(email.pk)
    if not claims:
        return 0
    owned = Q()
    for token, ids in claims.items():
        owned |= Q(claim_token=token, pk__in=ids)
    released = EmailJob.objects.filter(owned, status=EmailStatus.SENDING).update(
        status=EmailStatus.QUEUED,
        lease_expires_at=None,
        claim_token=None,
        rq_job_id="",
        updated_at=timezone.now(),
    )
    if released:
        drains_request_on_commit(sorted({email.priority for email in emails}))
    return released


def emails_not_yet_due(*, email_ids: list[str]) -> list[EmailJob]:
    """Emails among the ids that are waiting for a future time (a job that ran early)."""
    now = timezone.now()
    return list(
        EmailJob.objects.filter(pk__in=email_ids)
        .filter(
            Q(status__in=(EmailStatus.QUEUED, EmailStatus.SCHEDULED), send_at__gt=now)
            | Q(status=EmailStatus.RETRYING, next_attempt_at__gt=now)
        )
        .only("pk", "status", "send_at", "next_attempt_at", "priority")
    )


def email_render(*, email: EmailJob) -> RenderedContent:
    """Rendered subject, HTML and text of an email: its pinned template version, or its own."""
    source = email.template_version or email.template
    if source is not None:
        return render_content(
            subject=source.subject,
            html=source.html,
            text=source.text,
            context=email_render_context(email),
        )
    return RenderedContent(subject=email.subject, html=email.html, text=email.text)


def smtp_message_id(email_id: UUID) -> str:
    """The Message-ID we give an email: stable across attempts, unique per email."""
    return f"{email_id.hex}@{conf.message_id_domain()}"


def email_build_message(*, email: EmailJob, content: RenderedContent) -> EmailMultiAlternatives:
    """The Django EmailMessage for an email, with our Message-ID and anymail tags/metadata."""
    headers = {
        **email.headers,
        **email_unsubscribe_headers(email),
        "Message-ID": f"<{smtp_message_id(email.pk)}>",
    }
    message = MailqueueMessage(
        subject=content.subject,
        body=content.text or content.html,
        from_email=email.from_email or conf.default_from_email(),
        to=email.to,
        cc=email.cc,
        bcc=email.bcc,
        reply_to=email.reply_to,
        headers=headers,
    )
    if not content.text:
        message.content_subtype = "html"
    elif content.html:
        message.attach_alternative(content.html, "text/html")
    # Loaded with the claim: no query here, so this runs in a send thread.
    rows = getattr(email, "attachment_rows", None)
    for attachment in email.attachments.all() if rows is None else rows:
        if attachment.content_id:
            message.attach(_inline_part(attachment))
        else:
            message.attach(attachment.filename, bytes(attachment.content), attachment.mimetype)
    # anymail passes these to ESPs that support them; other backends ignore them.
    message.tags = list(email.tags)
    message.metadata = {**email.metadata, "mailqueue_email_id": str(email.pk)}
    message.mailqueue_email_id = email.pk
    return message


class MailqueueMessage(EmailMultiAlternatives):
    """Django's message, with inline parts (`cid:` images) kept beside the bodies in a
    multipart/related, where every mail program looks for them; other attachments follow in the
    usual multipart/mixed."""

    def _create_attachments(self, msg: MIMEBase) -> MIMEBase:
        inline = [
            part for part in self.attachments if isinstance(part, MIMEBase) and part["Content-ID"]
        ]
        if not inline:
            return super()._create_attachments(msg)
        related = SafeMIMEMultipart(
            _subtype="related", encoding=self.encoding or settings.DEFAULT_CHARSET
        )
        related.attach(msg)
        for part in inline:
            related.attach(part)
        others = [part for part in self.attachments if not any(part is p for p in inline)]
        saved, self.attachments = self.attachments, others
        try:
            return super()._create_attachments(related)
        finally:
            self.attachments = saved


def _inline_part(attachment: EmailAttachment) -> MIMEBase:
    """An inline part the HTML shows as `cid:<content_id>` (anymail's inline-image shape, which
    ESP backends recognise by its Content-ID and inline disposition)."""
    maintype, _, subtype = attachment.mimetype.partition("/")
    part = MIMEBase(maintype, subtype)
    part.set_payload(bytes(attachment.content))
    encoders.encode_base64(part)
    part.add_header("Content-ID", f"<{attachment.content_id}>")
    part.add_header("Content-Disposition", "inline", filename=attachment.filename)
    return part


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform(0, min(max, base * 2**(attempt-1)))."""
    ceiling = min(conf.retry_max_seconds(), conf.retry_base_seconds() * 2 ** max(0, attempt - 1))
    return random.uniform(0, ceiling)


@dataclass
class _Outcome:
    """The result of one attempt: which provider took (or refused) the message, and each try."""

    sent: bool
    provider: str = ""
    message_id: str = ""
    rejected: dict[str, str] = field(default_factory=dict)
    error: DeliveryError | None = None
    tries: list[DeliveryAttempt] = field(default_factory=list)
    captured: list[CapturedMessage] = field(default_factory=list)
    # Providers passed over because their circuit was open (the route's other part).
    skipped: list[str] = field(default_factory=list)
    # Failover providers passed over because their rate limit had no slot soon enough.
    limited: list[str] = field(default_factory=list)


def _try_row(
    email: EmailJob, number: int, provider: str, started, clock: float, error=None
) -> DeliveryAttempt:
    if error is None:
        outcome = DeliveryAttempt.Outcome.SENT
    elif error.transient:
        outcome = DeliveryAttempt.Outcome.TRANSIENT
    else:
        outcome = DeliveryAttempt.Outcome.PERMANENT
    row = DeliveryAttempt(
        email_id=email.pk,
        number=number,
        provider=provider,
        outcome=outcome,
        error_class=error.error_class if error else "",
        error_message=error.message[:5000] if error else "",
        started_at=started,
        duration_ms=int((time.monotonic() - clock) * 1000),
    )
    # Not a column: the metrics' error kind (an outage or a timeout is only known here).
    row.error_kind = error.kind if error else ""
    return row


def _attempt(
    email: EmailJob, message: EmailMultiAlternatives, number: int, providers: list[Provider]
) -> _Outcome:
    """Try the providers in order until one takes the message or one refuses it; a provider
    whose circuit opened since the check (or that another worker is probing) is skipped."""
    outcome = _Outcome(sent=False)
    for index, provider in enumerate(providers):
        permit = provider_call_permit(provider.name)
        if permit is None:
            outcome.skipped.append(provider.name)
            continue
        # The first provider's slot was taken before the attempt (email_decide); a provider
        # failed over to takes its own, or is passed over.
        if index and not _failover_slot(email, provider.name):
            provider_report_refusal(provider.name, permit)
            outcome.limited.append(provider.name)
            continue
        started = timezone.now()
        clock = time.monotonic()
        try:
            result = provider.send(message)
        except DeliveryError as exc:
            outcome.provider, outcome.error = provider.name, exc
            outcome.tries.append(_try_row(email, number, provider.name, started, clock, exc))
            if not exc.counts_against_provider:
                # About this message, not the provider (a refusal, a greylisted recipient): it
                # opens no circuit, and a probe's permit passes to the next email.
                provider_report_refusal(provider.name, permit)
                if not exc.transient:
                    break
            else:
                provider_report_failure(provider.name, permit)
            logger.warning(
                "email %s: provider %s failed (%s), trying the next one",
                email.pk,
                provider.name,
                exc.error_class,
            )
            continue
        outcome.tries.append(_try_row(email, number, provider.name, started, clock))
        provider_report_success(provider.name, permit)
        outcome.sent, outcome.provider, outcome.error = True, provider.name, None
        outcome.message_id, outcome.rejected = result.message_id, result.rejected
        if result.captured is not None:
            result.captured.email_id = email.pk
            outcome.captured.append(result.captured)
        break
    return outcome


def email_decide(*, email: EmailJob) -> Decision:
    """Render and send one claimed email and decide its next status; writes nothing.

    Safe to run in a send thread: it uses only the prefetched rows and this thread's providers.
    """
    number = email.attempts + 1
    # Suppressed recipients are dropped before anything is built; none left: no provider call.
    dropped = email_suppressed_recipients(email=email)
    if dropped and (suppressed := email_decide_suppressed(email=email, dropped=dropped)):
        return suppressed
    try:
        content = email_render(email=email)
        # Tracking changes only what is sent (the stored HTML stays as rendered); untracked
        # email (the default) skips it entirely.
        sent_content, links = (
            content_track(email=email, content=content)
            if email.track_opens or email.track_clicks
            else (content, [])
        )
        message = email_build_message(email=email, content=sent_content)
    except MailqueueError as exc:
        # A template that cannot render will not render next time either: fail now.
        error = DeliveryError(
            f"{exc.field or 'content'}: {exc.message}", error_class="render", transient=False
        )
        outcome = _Outcome(sent=False, error=error)
        outcome.tries.append(_try_row(email, number, "", timezone.now(), time.monotonic(), error))
        return _decide_failed(email=email, number=number, outcome=outcome, content=None)
    if dropped:
        message_drop_recipients(message=message, dropped=dropped)
    try:
        # An email may name its own providers (a released capture, say).
        providers = (
            [get_provider(name) for name in email.providers]
            if email.providers
            else configured_providers()
        )
    except MailqueueError as exc:
        error = DeliveryError(str(exc), error_class="configuration")
        outcome = _Outcome(sent=False, error=error)
        outcome.tries.append(_try_row(email, number, "", timezone.now(), time.monotonic(), error))
        return _decide_unsent(email=email, number=number, outcome=outcome, content=content)
    usable = providers_in_service(providers)
    if not usable:
        # Every provider's circuit is open: nothing is tried (no timeout paid, no attempt used
        # up); the email waits until the first one may be called again.
        return _decide_wait_for_providers(email=email, providers=providers)
    # Shared rate limits: nothing at all (not even a Redis call) while none is configured.
    if conf.rate_limits() and (limited := _rate_limit_wait(email, message, usable[0].name)):
        return _decide_rate_limited(email=email, acquired=limited)
    outcome = _attempt(email, message, number, usable)
    if not outcome.tries:
        # Every usable provider's circuit opened, or was being probed, since the check above.
        return _decide_wait_for_providers(email=email, providers=providers)
    # The route shown in the admin: providers passed over because their circuit was open.
    outcome.skipped[:0] = [provider.name for provider in providers if provider not in usable]
    if outcome.sent:
        decision = _decide_sent(email=email, number=number, outcome=outcome, content=content)
        decision.events += email_suppression_events(email=email, dropped=dropped)
        decision.links = links
        return decision
    decision = _decide_unsent(email=email, number=number, outcome=outcome, content=content)
    # A provider may have taken the message before failing: its tracked links must work.
    decision.links = links
    return decision


def _decide_unsent(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent
) -> Decision:
    """Retry later after a transient error with attempts left; fail otherwise."""
    assert outcome.error is not None
    if outcome.error.transient and number < email.max_attempts:
        return _decide_retry(email=email, number=number, outcome=outcome)
    return _decide_failed(email=email, number=number, outcome=outcome, content=content)


def _content_fields(content: RenderedContent | None) -> dict:
    if content is None:
        return {}
    return {"subject": content.subject, "html": content.html, "text": content.text}


def _decide_sent(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent
) -> Decision:
    events = [
        NewEvent(
            email_id=email.pk,
            event_type=EventType.SENT,
            provider=outcome.provider,
            recipient=email.recipient,
            data={"message_id": outcome.message_id},
            description=_route_description(outcome),
        )
    ]
    # A provider that took the message may still have refused some recipients.
    events += [
        NewEvent(
            email_id=email.pk,
            event_type=EventType.REJECTED,
            provider=outcome.provider,
            recipient=address,
            description=f"Refused by {outcome.provider}: {reason}",
        )
        for address, reason in outcome.rejected.items()
    ]
    last_error = ""
    if outcome.rejected:
        refused = "; ".join(f"{address}: {reason}" for address, reason in outcome.rejected.items())
        last_error = f"Some recipients were refused: {refused}"
    return Decision(
        email=email,
        status=EmailStatus.SENT,
        fields={
            "attempts": number,
            "provider": outcome.provider,
            "message_id": outcome.message_id,
            "sent_at": timezone.now(),
            **error_fields(error_class="recipients_refused", message=last_error),
            **_content_fields(content),
        },
        tries=outcome.tries,
        events=events,
        captured=outcome.captured,
    )


def _route_description(outcome: _Outcome) -> str:
    """How the message reached its provider when not by the first one: providers passed over
    (circuit open) and providers that failed before it, so the admin shows the failover."""
    route = [f"{name} skipped (circuit open)" for name in outcome.skipped]
    route += [f"{name} skipped (rate limit)" for name in outcome.limited]
    route += [f"{t.provider} failed" for t in outcome.tries if t.provider != outcome.provider]
    return f"failed over to {outcome.provider}: {', '.join(route)}" if route else ""


def _decide_failed(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent | None
) -> Decision:
    error = outcome.error
    assert error is not None
    kind = "permanent error" if not error.transient else "gave up after the last attempt"
    event = NewEvent(
        email_id=email.pk,
        event_type=EventType.FAILED,
        provider=outcome.provider,
        recipient=email.recipient,
        description=f"{kind}: {error.message}",
        data={"error_class": error.error_class},
    )
    return Decision(
        email=email,
        status=EmailStatus.FAILED,
        fields={
            "attempts": number,
            **error_fields(error_class=error.error_class, message=error.message),
            **_content_fields(content),
        },
        tries=outcome.tries,
        events=[event],
    )


def _decide_later(
    *, email: EmailJob, outcome: _Outcome, event: NewEvent, next_at: datetime, job_id: str, **fields
) -> Decision:
    """Move a sending email to `retrying`, with its next job scheduled for `next_at`."""
    return Decision(
        email=email,
        status=EmailStatus.RETRYING,
        fields={"next_attempt_at": next_at, "rq_job_id": job_id, **fields},
        tries=outcome.tries,
        events=[event],
        job=DeliveryJob(
            job_id=job_id, email_ids=(str(email.pk),), priority=email.priority, run_at=next_at
        ),
    )


def _decide_retry(*, email: EmailJob, number: int, outcome: _Outcome) -> Decision:
    error = outcome.error
    assert error is not None
    next_at = timezone.now() + timedelta(seconds=backoff_seconds(number))
    return _decide_later(
        email=email,
        outcome=outcome,
        event=NewEvent(
            email_id=email.pk,
            event_type=EventType.DEFERRED,
            provider=outcome.provider,
            recipient=email.recipient,
            description=f"attempt {number} failed, next at {next_at.isoformat()}: {error.message}",
            data={"error_class": error.error_class, "next_attempt_at": next_at.isoformat()},
        ),
        next_at=next_at,
        job_id=f"retry-{email.pk.hex}-{number}",
        attempts=number,
        **error_fields(error_class=error.error_class, message=error.message),
    )


def _decide_wait_for_providers(*, email: EmailJob, providers: list[Provider]) -> Decision:
    """Put an email back to wait for a provider's circuit to let calls through, without
    counting an attempt."""
    next_at = timezone.now() + timedelta(seconds=providers_wait_seconds(providers))
    names = ", ".join(provider.name for provider in providers)
    message = f"Waiting: every provider's circuit is open after repeated failures ({names})."
    return _decide_later(
        email=email,
        outcome=_Outcome(sent=False),
        event=NewEvent(
            email_id=email.pk,
            event_type=EventType.DEFERRED,
            recipient=email.recipient,
            description=f"{message} Next try at {next_at.isoformat()}.",
        ),
        next_at=next_at,
        job_id=f"wait-{uuid4().hex}",
        **error_fields(error_class="providers_circuit_open", message=message),
    )


def email_deliver(*, email: EmailJob) -> str:
    """Deliver one claimed (`sending`) email and record the outcome; return its new status."""
    if not email_hold_lease(email=email):
        logger.warning("email %s: lease lost before sending; another worker has it", email.pk)
        return LEASE_LOST
    return decisions_record([email_decide(email=email)])[0]


# A rate-limited email takes a slot at most this far ahead and sleeps until it comes, in its
# send thread: a second of sleep is cheaper than a written requeue, and the slot is its own.
# `default` and `low` book less far ahead (more the longer they were held, up to the max): a
# `high` email's slot comes after theirs.
RATE_LIMIT_BOOK_SECONDS = 1.0
RATE_LIMIT_BOOK_SECONDS_NOT_HIGH = 0.25
RATE_LIMIT_BOOK_SECONDS_NOT_HIGH_MAX = 0.5
# A delivery keeps a rate-limited email in hand (back in its place in line, sends paused) when
# its slot is at most this far: no write at all. A longer wait (a per-minute limit) is written,
# like a provider's open circuit, and the rest of the claim goes back to the queue.
RATE_LIMIT_HOLD_SECONDS = 10.0


def _rate_limit_wait(
    email: EmailJob, message: EmailMultiAlternatives, provider: str
) -> "rate_limits.Acquired | None":
    """Take a slot of the email's rate limits, sleeping until it comes if it is booked; the
    refusal (nothing taken) when the next slot is further than RATE_LIMIT_BOOK_SECONDS."""
    acquired = rate_limits.rate_limits_acquire(
        provider=provider,
        recipients=message.recipients(),  # suppressed recipients already dropped
        priority=email.priority,
        reserve_within=_rate_limit_book_seconds(email),
    )
    if acquired.wait and acquired.limit is not None:
        rate_limits.wait_note(acquired.limit.name)
    if not acquired.booked:
        return acquired
    if acquired.wait:
        time.sleep(acquired.wait)
    return None


def _failover_slot(email: EmailJob, provider: str) -> bool:
    """A slot of the limit of a provider the email fails over to (nothing to do without one),
    sleeping until it comes if it is within RATE_LIMIT_BOOK_SECONDS; False when it is not."""
    acquired = rate_limits.rate_limits_acquire(
        provider=provider,
        recipients=(),  # the recipient domains' slots were taken with the first provider's
        priority=email.priority,
        reserve_within=RATE_LIMIT_BOOK_SECONDS,
    )
    if not acquired.booked:
        if acquired.limit is not None:
            rate_limits.wait_note(acquired.limit.name)
        return False
    if acquired.wait:
        time.sleep(acquired.wait)
    return True


def _rate_limit_book_seconds(email: EmailJob) -> float:
    """How far ahead an email may book a slot: `high` ones a second; the others less, plus the
    time they have been held since their claim (its `updated_at`), up to half a second. The emails
    that waited longest book first: workers do not race for each slot on equal terms, and
    emails claimed earlier would otherwise lose to later ones for as long as their luck lasts.
    """
    if email.priority == priorities.HIGH:
        return RATE_LIMIT_BOOK_SECONDS
    held = (timezone.now() - email.updated_at).total_seconds() if email.updated_at else 0.0
    return min(RATE_LIMIT_BOOK_SECONDS_NOT_HIGH_MAX, RATE_LIMIT_BOOK_SECONDS_NOT_HIGH + held)


def _decide_rate_limited(*, email: EmailJob, acquired: "rate_limits.Acquired") -> Decision:
    """Put an email back until a rate limit lets it go, without counting an attempt.

    The delivery keeps it in its place in line when the wait is short (RATE_LIMIT_HOLD_SECONDS,
    see _SendWindow.rate_limit_hold); this decision is written only for a longer wait.
    """
    next_at = timezone.now() + timedelta(seconds=acquired.wait)
    name = acquired.limit.describe() if acquired.limit else "a rate limit"
    message = f"Waiting: rate limit {name} reached."
    decision = _decide_later(
        email=email,
        outcome=_Outcome(sent=False),
        event=NewEvent(
            email_id=email.pk,
            event_type=EventType.DEFERRED,
            recipient=email.recipient,
            description=f"{message} Next try at {next_at.isoformat()}.",
            data={
                "rate_limit": acquired.limit.name if acquired.limit else "",
                "next_attempt_at": next_at.isoformat(),
            },
        ),
        next_at=next_at,
        job_id=f"limited-{uuid4().hex}",
        **error_fields(error_class="rate_limited", message=message),
    )
    # Not a column: tells the delivery it may keep the email in hand instead.
    decision.rate_limit_wait = acquired.wait
    return decision


@dataclass
class DeliveryReport:
    """What one delivery job did, stored as the RQ job's result."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    skipped: int = 0
    rescheduled: int = 0
    lost: int = 0
    crashed: int = 0
    suppressed: int = 0
    # Due emails of a paused priority, moved to `queued` for the drain that resume requests.
    held: int = 0
    # Claimed but never handed to a provider: back to `queued` because the worker is stopping.
    released: int = 0

    def count(self, status: str) -> None:
        """Count one email's recorded outcome."""
        name = {
            EmailStatus.SENT: "sent",
            EmailStatus.FAILED: "failed",
            EmailStatus.RETRYING: "retrying",
            EmailStatus.SUPPRESSED: "suppressed",
            LEASE_LOST: "lost",
            CRASHED: "crashed",
        }[status]
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict:
        """Plain dict for RQ's result storage."""
        return dict(self.__dict__)


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _send_pool() -> ThreadPoolExecutor:
    """This process's send threads (MAILQUEUE_WORKER_CONCURRENCY of them), made on first use."""
    global _pool, _pool_size
    size = conf.worker_concurrency()
    with _pool_lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="mailqueue-send")
            _pool_size = size
        return _pool


def send_pool_shutdown(*, wait: bool = True) -> None:
    """Stop the send threads (worker shutdown); the next delivery makes new ones.

    Without `wait` (a cold shutdown), sends not yet started are cancelled and those under way
    are left running: waiting for them could take a provider's whole timeout.
    """
    global _pool, _pool_size
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=wait, cancel_futures=not wait)
        _pool, _pool_size = None, 0


class _SendWindow:
    """The emails of a delivery waiting, in the send threads, and decided but not yet written.

    Each email's lease is checked just before it is handed to a thread, and few are handed out
    ahead of time (twice the threads): an email is never sent long after its lease was last
    checked. Outcomes are written at most OUTCOME_GROUP_SIZE or OUTCOME_GROUP_SECONDS at a time.
    """

    def __init__(self, claimed: list[EmailJob], report: DeliveryReport) -> None:
        self.pool = _send_pool()
        self.size = 2 * conf.worker_concurrency()
        self.waiting = deque(claimed)
        self.in_flight: dict[Future, EmailJob] = {}
        self.held: list[Decision] = []
        self.held_since = 0.0
        self.report = report
        # Rate limits: no hand-out before this (monotonic) time; the last look for higher jobs.
        self.paused_until = 0.0
        self.higher_checked = 0.0
        self.limit_released = False
        self.limited = bool(conf.rate_limits())

    def hand_out(self) -> None:
        """Hand waiting emails whose lease still holds to the send threads, up to the window."""
        if self.paused_until and time.monotonic() < self.paused_until:
            return
        while self.waiting and len(self.in_flight) < self.size:
            email = self.waiting.popleft()
            if email_hold_lease(email=email):
                self.in_flight[self.pool.submit(email_decide, email=email)] = email
            else:
                logger.warning("email %s: lease lost before sending", email.pk)
                self.report.count(LEASE_LOST)

    def collect(self) -> None:
        """Wait for a send to finish (or the held group's deadline), hold its outcome, and write
        the held group once it is full, old enough, or the last one."""
        timeout = STOP_CHECK_SECONDS
        if self.held:
            deadline = self.held_since + OUTCOME_GROUP_SECONDS
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        done, _ = wait(self.in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            email = self.in_flight.pop(future)
            exc = future.exception()
            if exc is not None:
                # A bug on one email must not stop the rest of the chunk; the email stays
                # `sending` and the sweeper takes it back when its lease ends.
                logger.error("email %s: delivery crashed", email.pk, exc_info=exc)
                _record_crash(email, exc)
                self.report.count(CRASHED)
                continue
            decision = future.result()
            if self.rate_limit_hold(email, decision):
                continue
            if not self.held:
                self.held_since = time.monotonic()
            self.held.append(decision)
            if len(self.held) >= OUTCOME_GROUP_SIZE:
                self.flush()
        if self.held and (
            time.monotonic() - self.held_since >= OUTCOME_GROUP_SECONDS
            or not (self.waiting or self.in_flight)
        ):
            self.flush()

    def rate_limit_hold(self, email: EmailJob, decision: Decision) -> bool:
        """Keep a rate-limited email in hand when its wait is short: back in its place in line
        (before the later emails of its priority), hand-outs paused until a slot can be booked.
        A longer wait is written; the hand-outs pause for it too (the loop then releases)."""
        wait_seconds = getattr(decision, "rate_limit_wait", None)
        if wait_seconds is None:
            return False
        pause = max(0.0, wait_seconds - _rate_limit_book_seconds(email))
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        if wait_seconds > RATE_LIMIT_HOLD_SECONDS or _stop_requested.is_set():
            return False
        place = next((i for i, e in enumerate(self.waiting) if e.pk > email.pk), None)
        self.waiting.insert(len(self.waiting) if place is None else place, email)
        return True

    def may_refill(self) -> bool:
        """Whether to claim more now. Under rate limits, not before the last claim is done: a
        claim sent while newer ones wait in the send threads would go behind them."""
        return not (self.limited and self.in_flight)

    def rate_limit_paused(self) -> bool:
        """Wait out a rate-limit pause (True while it lasts). Released instead when the wait is
        long or a job of a higher priority is waiting: this worker is needed elsewhere."""
        left = self.paused_until - time.monotonic()
        if left <= 0:
            return False
        if self.waiting and (left > RATE_LIMIT_HOLD_SECONDS or self._higher_waiting()):
            self.release_unsent()
            self.limit_released = True
            return False
        if not self.in_flight:
            time.sleep(min(left, STOP_CHECK_SECONDS))
        return True

    def _higher_waiting(self) -> bool:
        """Whether a job of a higher priority waits (asked at most twice a second)."""
        now = time.monotonic()
        if now - self.higher_checked < 0.5:
            return False
        self.higher_checked = now
        return _higher_priority_waiting(self.waiting[0].priority)

    def flush(self) -> None:
        """Write the held outcomes as one group."""
        group, self.held = self.held, []
        if group:
            for status in decisions_record(group):
                self.report.count(status)

    def release_unsent(self) -> None:
        """Give back what no provider has seen: the waiting emails and the sends not started."""
        unsent = list(self.waiting)
        for future, email in list(self.in_flight.items()):
            if future.cancel():
                del self.in_flight[future]
                unsent.append(email)
        if not unsent:
            return
        try:
            self.report.released += emails_release(emails=unsent)
        except DatabaseError:
            # They stay `sending`: the sweeper takes them back when their lease ends.
            logger.exception("could not release %d unsent email(s)", len(unsent))
        self.waiting.clear()

    def abandon(self, *, release: bool) -> None:
        """Stop at once: write the outcomes already known, release the unsent emails if asked,
        and leave the sends under way (and the rest) to their lease."""
        for future in [future for future in self.in_flight if future.done()]:
            self.in_flight.pop(future)
            if not future.cancelled() and future.exception() is None:
                self.held.append(future.result())
        try:
            self.flush()
            if release:
                self.release_unsent()
        except Exception:
            # The job is ending anyway: what is not written is left to the leases.
            logger.exception("could not record the outcomes of an interrupted delivery")


def _deliver_claimed(
    claimed: list[EmailJob],
    report: DeliveryReport,
    *,
    refill: Callable[[], list[EmailJob]] | None = None,
) -> None:
    """Send claimed emails over the send threads, writing outcomes a small group at a time.

    `refill` claims more when the claimed emails are all handed out (a drain going on to its
    next chunk while the last sends of this one finish); it returns [] to stop. Once the worker
    is asked to stop, the sends under way finish and the rest of the claim is released.
    """
    # Send threads never touch the database: the DKIM keys are loaded here (once a minute).
    dkim_keyring_refresh()
    window = _SendWindow(claimed, report)
    try:
        while True:
            if _stop_requested.is_set():
                refill = None
                window.release_unsent()
            if not window.waiting and refill is not None and window.may_refill():
                more = refill()
                report.claimed += len(more)
                window.waiting.extend(more)
                if not more:
                    refill = None
            if not (window.waiting or window.in_flight):
                break
            if window.rate_limit_paused():
                if not window.waiting:
                    refill = None  # its emails were written to wait: claim no more
                if not window.in_flight:
                    continue
            elif window.limit_released:
                refill = None
            window.hand_out()
            if window.in_flight:
                window.collect()
        window.flush()  # outcomes held when the last emails in the window turned out lost
        if waits := rate_limits.waits_take():
            rate_limit_waits_count(waits)
    except BaseException as exc:
        # RQ's job timeout or a cold shutdown (SystemExit from the second signal): the sends
        # under way are not waited for (the sweeper takes their emails back after the lease) and
        # the unsent emails go back now. After a bug, the unsent ones wait for their lease too:
        # each time it ends counts an attempt, so a bug that recurs cannot go round forever.
        window.abandon(
            release=isinstance(exc, (BaseTimeoutException, SystemExit, KeyboardInterrupt))
        )
        raise


def emails_deliver(*, email_ids: list[str], job_id: str = "") -> DeliveryReport:
    """Claim and deliver the emails named by one job (a scheduled send, a retry)."""
    report = DeliveryReport()
    claimed = emails_claim(email_ids=email_ids, job_id=job_id)
    report.claimed = len(claimed)
    _deliver_claimed(claimed, report)
    if len(claimed) < len(email_ids):
        claimed_ids = {str(email.pk) for email in claimed}
        unclaimed = [i for i in email_ids if i not in claimed_ids]
        report.rescheduled = _reschedule(emails_not_yet_due(email_ids=unclaimed))
        report.held = emails_hold_paused(email_ids=unclaimed)
        report.skipped = len(email_ids) - len(claimed) - report.rescheduled - report.held
    return report


# How long one drain job may go on claiming chunks while nothing of a higher priority waits.
DRAIN_JOB_SECONDS = 5.0


def queue_drain(*, priority: str, job_id: str = "") -> DeliveryReport:
    """Claim the oldest queued emails of a priority, a chunk at a time, and deliver them.

    A full chunk means more may wait: another drain is requested before sending, so a second
    worker process can take the next chunk meanwhile. This job itself goes on to the next chunk
    (its sends overlapping the last ones of the chunk before) for up to DRAIN_JOB_SECONDS,
    unless a job of a higher priority is waiting: then it ends after the chunk in hand, and RQ
    runs the higher queue's job next. While the priority is paused, the claim takes nothing and
    the job ends.
    """
    try:
        drain_started(priority)
    except RedisError as exc:
        # The marker expires on its own; claiming from PostgreSQL needs no Redis.
        logger.warning("drain %s: could not drop the marker: %s", priority, exc)
    report = DeliveryReport()
    chunk_size = conf.batch_chunk_size()
    deadline = time.monotonic() + DRAIN_JOB_SECONDS

    full = False

    def claim_chunk() -> list[EmailJob]:
        nonlocal full
        # While rate limits bite, a worker claims only what it can soon send: the rest stays
        # queued in order, for whichever worker gets the next slot.
        size = rate_limits.claim_size(chunk_size, conf.worker_concurrency())
        claimed = emails_claim_queued(priority=priority, limit=size, job_id=job_id)
        full = len(claimed) >= size
        if full:
            try:
                drains_request([priority])
            except RedisError as exc:
                logger.warning("drain %s: could not request the next drain: %s", priority, exc)
        return claimed

    def next_chunk() -> list[EmailJob]:
        if time.monotonic() >= deadline or _higher_priority_waiting(priority):
            return []
        return claim_chunk()

    claimed = claim_chunk()
    report.claimed = len(claimed)
    _deliver_claimed(claimed, report, refill=next_chunk if full else None)
    return report


def _higher_priority_waiting(priority: str) -> bool:
    """Whether a job waits on a queue that workers serve before this priority's."""
    order = list(priorities.SERVED_ORDER)
    higher = order[: order.index(priority)] if priority in order else []
    try:
        return bool(higher) and jobs_waiting(higher) > 0
    except RedisError:
        return True  # cannot tell: end the job and let RQ choose


def _record_crash(email: EmailJob, exc: BaseException) -> None:
    """Say on the email (and as an attempt) why its delivery crashed; the lease does the rest."""
    message = f"worker error: {type(exc).__name__}: {exc}"
    # An exception's text may quote the context, a one-time code included.
    message = text_redact(message, email_secret_values(email=email))[:5000]
    try:
        with transaction.atomic():
            EmailJob.objects.filter(pk=email.pk, claim_token=email.claim_token).update(
                **error_fields(
                    error_class=f"{type(exc).__module__}.{type(exc).__qualname__}", message=message
                )
            )
            DeliveryAttempt.objects.create(
                email=email,
                number=email.attempts + 1,
                provider="",
                outcome=DeliveryAttempt.Outcome.TRANSIENT,
                error_class="worker_error",
                error_message=message,
                started_at=timezone.now(),
            )
    except Exception:
        logger.exception("email %s: could not record the crash", email.pk)


def _reschedule(emails: list[EmailJob]) -> int:
    """Put back emails whose job ran before their time (never send early).

    Each gets a job with a new id: the job running now keeps its own id, and RQ marks that id
    finished (and lets it expire) when it ends.
    """
    jobs = []
    with transaction.atomic():
        for email in emails:
            job_id = email_job_id(email.pk)
            # Point the row at its new job, or the sweeper would see the finished old one.
            if EmailJob.objects.filter(pk=email.pk, status=email.status).update(rq_job_id=job_id):
                jobs.append(
                    DeliveryJob(
                        job_id=job_id,
                        email_ids=(str(email.pk),),
                        priority=email.priority,
                        run_at=(
                            email.next_attempt_at
                            if email.status == EmailStatus.RETRYING
                            else email.send_at
                        ),
                    )
                )
        deliveries_enqueue_on_commit(jobs)
    return len(jobs)
