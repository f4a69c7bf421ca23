"""The worker side: claim emails, render them, hand them to providers, record the outcome."""

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rq.timeouts import BaseTimeoutException

from mailqueue import conf
from mailqueue.errors import DeliveryError, MailqueueError
from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.providers import (
    Provider,
    configured_providers,
    get_provider,
    provider_report_outage,
    provider_report_success,
    providers_cooldown_remaining,
    providers_in_service,
)
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue_on_commit, email_job_id
from mailqueue.services.dead_letters import error_group_key
from templates_app.rendering import RenderedContent, render_content
from tracking.models import EventType
from tracking.services import NewEvent, events_record

logger = logging.getLogger(__name__)

CLAIMABLE = (EmailStatus.QUEUED, EmailStatus.SCHEDULED, EmailStatus.RETRYING)
# email_deliver's answer when the email was taken back from this worker before it was sent.
LEASE_LOST = "lease_lost"


def claimable_filter(now: datetime) -> Q:
    """Emails a worker may take now: queued, or scheduled/retrying whose time has come."""
    return (
        Q(status=EmailStatus.QUEUED, send_at__isnull=True)
        | Q(status__in=(EmailStatus.QUEUED, EmailStatus.SCHEDULED), send_at__lte=now)
        | Q(status=EmailStatus.RETRYING, next_attempt_at__lte=now)
    )


def emails_claim(*, email_ids: list[str]) -> list[EmailJob]:
    """Move due emails among the ids to `sending` under a lease; each is claimed by one worker."""
    now = timezone.now()
    token = uuid4()
    lease_until = now + timedelta(seconds=conf.lease_seconds())
    with transaction.atomic():
        # SKIP LOCKED: a second worker holding the same ids skips rows being claimed right now,
        # and the status condition in the UPDATE keeps it from claiming them afterwards.
        ids = list(
            EmailJob.objects.select_for_update(skip_locked=True)
            .filter(claimable_filter(now), pk__in=email_ids)
            .values_list("pk", flat=True)
        )
        if not ids:
            return []
        EmailJob.objects.filter(claimable_filter(now), pk__in=ids).update(
            status=EmailStatus.SENDING,
            lease_expires_at=lease_until,
            claim_token=token,
            next_attempt_at=None,
            updated_at=now,
        )
    # The rows were locked until the commit above, so every id in `ids` is ours now. They are
    # sent in the job's order (the order they were accepted in, for a batch).
    position = {str(email_id): index for index, email_id in enumerate(email_ids)}
    claimed = (
        EmailJob.objects.filter(pk__in=ids)
        .select_related("template", "template_version")
        .prefetch_related("attachments")
    )
    return sorted(claimed, key=lambda email: position.get(str(email.pk), len(position)))


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
            subject=source.subject, html=source.html, text=source.text, context=email.context
        )
    return RenderedContent(subject=email.subject, html=email.html, text=email.text)


def smtp_message_id(email_id: UUID) -> str:
    """The Message-ID we give an email: stable across attempts, unique per email."""
    return f"{email_id.hex}@{conf.message_id_domain()}"


def email_build_message(*, email: EmailJob, content: RenderedContent) -> EmailMultiAlternatives:
    """The Django EmailMessage for an email, with our Message-ID and anymail tags/metadata."""
    headers = {**email.headers, "Message-ID": f"<{smtp_message_id(email.pk)}>"}
    message = EmailMultiAlternatives(
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
    for attachment in email.attachments.all():
        message.attach(attachment.filename, bytes(attachment.content), attachment.mimetype)
    # anymail passes these to ESPs that support them; other backends ignore them.
    message.tags = list(email.tags)
    message.metadata = {**email.metadata, "mailqueue_id": str(email.pk)}
    message.mailqueue_email_id = email.pk
    return message


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


def _try_row(
    email: EmailJob, number: int, provider: str, started, clock: float, error=None
) -> DeliveryAttempt:
    if error is None:
        outcome = DeliveryAttempt.Outcome.SENT
    elif error.transient:
        outcome = DeliveryAttempt.Outcome.TRANSIENT
    else:
        outcome = DeliveryAttempt.Outcome.PERMANENT
    return DeliveryAttempt(
        email=email,
        number=number,
        provider=provider,
        outcome=outcome,
        error_class=error.error_class if error else "",
        error_message=error.message[:5000] if error else "",
        started_at=started,
        duration_ms=int((time.monotonic() - clock) * 1000),
    )


def _attempt(
    email: EmailJob, message: EmailMultiAlternatives, number: int, providers: list[Provider]
) -> _Outcome:
    """Try the providers in order until one takes the message or one refuses it."""
    outcome = _Outcome(sent=False)
    for provider in providers:
        started = timezone.now()
        clock = time.monotonic()
        try:
            result = provider.send(message)
        except DeliveryError as exc:
            outcome.provider, outcome.error = provider.name, exc
            outcome.tries.append(_try_row(email, number, provider.name, started, clock, exc))
            if exc.outage:
                provider_report_outage(provider.name)
            if not exc.transient:
                break
            logger.warning(
                "email %s: provider %s failed (%s), trying the next one",
                email.pk,
                provider.name,
                exc.error_class,
            )
            continue
        outcome.tries.append(_try_row(email, number, provider.name, started, clock))
        provider_report_success(provider.name)
        outcome.sent, outcome.provider, outcome.error = True, provider.name, None
        outcome.message_id, outcome.rejected = result.message_id, result.rejected
        break
    return outcome


def email_deliver(*, email: EmailJob) -> str:
    """Deliver one claimed (`sending`) email and record the outcome; return its new status."""
    number = email.attempts + 1
    try:
        content = email_render(email=email)
        message = email_build_message(email=email, content=content)
    except MailqueueError as exc:
        # A template that cannot render will not render next time either: fail now.
        error = DeliveryError(
            f"{exc.field or 'content'}: {exc.message}", error_class="render", transient=False
        )
        outcome = _Outcome(sent=False, error=error)
        outcome.tries.append(_try_row(email, number, "", timezone.now(), time.monotonic(), error))
        return _email_finish_failed(email=email, number=number, outcome=outcome, content=None)
    if not email_hold_lease(email=email):
        logger.warning("email %s: lease lost before sending; another worker has it", email.pk)
        return LEASE_LOST
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
        return _email_finish_unsent(email=email, number=number, outcome=outcome, content=content)
    usable = providers_in_service(providers)
    if not usable:
        # Every provider had an outage moments ago: nothing is tried (no timeout paid, no
        # attempt used up); the email waits until the first provider's cooldown ends.
        return _email_wait_for_providers(email=email, providers=providers)
    outcome = _attempt(email, message, number, usable)
    if outcome.sent:
        return _email_finish_sent(email=email, number=number, outcome=outcome, content=content)
    return _email_finish_unsent(email=email, number=number, outcome=outcome, content=content)


def _email_finish_unsent(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent
) -> str:
    """Retry later after a transient error with attempts left; fail otherwise."""
    assert outcome.error is not None
    if outcome.error.transient and number < email.max_attempts:
        return _email_finish_retry(email=email, number=number, outcome=outcome)
    return _email_finish_failed(email=email, number=number, outcome=outcome, content=content)


def _content_fields(content: RenderedContent | None) -> dict:
    if content is None:
        return {}
    return {"subject": content.subject, "html": content.html, "text": content.text}


def _finish(email: EmailJob, outcome: _Outcome, events: list[NewEvent], **fields) -> bool:
    """Leave `sending` and record the attempt, in one transaction; False if the lease was lost."""
    now = timezone.now()
    with transaction.atomic():
        updated = EmailJob.objects.filter(
            pk=email.pk, status=EmailStatus.SENDING, claim_token=email.claim_token
        ).update(lease_expires_at=None, claim_token=None, updated_at=now, **fields)
        # The tries happened either way; the events only if this worker still owned the email.
        DeliveryAttempt.objects.bulk_create(outcome.tries)
        if updated:
            events_record(events=events)
    if not updated:
        logger.warning("email %s: left `sending` while being delivered (lease lost)", email.pk)
    return bool(updated)


def _email_finish_sent(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent
) -> str:
    events = [
        NewEvent(
            email_id=email.pk,
            event_type=EventType.SENT,
            provider=outcome.provider,
            recipient=email.recipient,
            data={"message_id": outcome.message_id},
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
    _finish(
        email,
        outcome,
        events,
        status=EmailStatus.SENT,
        attempts=number,
        provider=outcome.provider,
        message_id=outcome.message_id,
        sent_at=timezone.now(),
        last_error=(
            "Some recipients were refused: "
            + "; ".join(f"{address}: {reason}" for address, reason in outcome.rejected.items())
        )[:5000]
        if outcome.rejected
        else "",
        **_content_fields(content),
    )
    return EmailStatus.SENT


def _email_finish_failed(
    *, email: EmailJob, number: int, outcome: _Outcome, content: RenderedContent | None
) -> str:
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
    _finish(
        email,
        outcome,
        [event],
        status=EmailStatus.FAILED,
        attempts=number,
        last_error=error.message[:5000],
        error_class=error.error_class[:200],
        error_group=error_group_key(error_class=error.error_class, message=error.message),
        **_content_fields(content),
    )
    return EmailStatus.FAILED


def _email_finish_later(
    *, email: EmailJob, outcome: _Outcome, event: NewEvent, next_at: datetime, job_id: str, **fields
) -> str:
    """Move a sending email to `retrying` and schedule its next job for `next_at`."""
    with transaction.atomic():
        moved = _finish(
            email,
            outcome,
            [event],
            status=EmailStatus.RETRYING,
            next_attempt_at=next_at,
            rq_job_id=job_id,
            **fields,
        )
        if moved:
            deliveries_enqueue_on_commit(
                [
                    DeliveryJob(
                        job_id=job_id,
                        email_ids=(str(email.pk),),
                        priority=email.priority,
                        run_at=next_at,
                    )
                ]
            )
    return EmailStatus.RETRYING


def _email_finish_retry(*, email: EmailJob, number: int, outcome: _Outcome) -> str:
    error = outcome.error
    assert error is not None
    next_at = timezone.now() + timedelta(seconds=backoff_seconds(number))
    return _email_finish_later(
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
        last_error=error.message[:5000],
        error_class=error.error_class[:200],
        error_group=error_group_key(error_class=error.error_class, message=error.message),
    )


def _email_wait_for_providers(*, email: EmailJob, providers: list[Provider]) -> str:
    """Put an email back to wait for a provider's cooldown, without counting an attempt."""
    next_at = timezone.now() + timedelta(seconds=providers_cooldown_remaining(providers))
    names = ", ".join(provider.name for provider in providers)
    message = f"Waiting: every provider is cooling down after an outage ({names})."
    return _email_finish_later(
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
        last_error=message,
    )


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

    def as_dict(self) -> dict:
        """Plain dict for RQ's result storage."""
        return dict(self.__dict__)


def emails_deliver(*, email_ids: list[str]) -> DeliveryReport:
    """Claim and deliver the emails of one job over the worker's open provider connections."""
    report = DeliveryReport()
    claimed = emails_claim(email_ids=email_ids)
    report.claimed = len(claimed)
    for email in claimed:
        try:
            status = email_deliver(email=email)
        except BaseTimeoutException:
            # RQ's job timeout: stop the chunk now; unsent emails go back after their lease.
            raise
        except Exception as exc:
            # A bug or a database hiccup on one email must not stop the rest of the chunk; the
            # email stays `sending` and the sweeper takes it back when its lease ends.
            logger.exception("email %s: delivery crashed", email.pk)
            _record_crash(email, exc)
            status = "crashed"
        if status == EmailStatus.SENT:
            report.sent += 1
        elif status == EmailStatus.FAILED:
            report.failed += 1
        elif status == EmailStatus.RETRYING:
            report.retrying += 1
        elif status == LEASE_LOST:
            report.lost += 1
    if len(claimed) < len(email_ids):
        claimed_ids = {str(email.pk) for email in claimed}
        early = emails_not_yet_due(email_ids=[i for i in email_ids if i not in claimed_ids])
        report.rescheduled = _reschedule(early)
        report.skipped = len(email_ids) - len(claimed) - report.rescheduled
    return report


def _record_crash(email: EmailJob, exc: Exception) -> None:
    """Say on the email (and as an attempt) why its delivery crashed; the lease does the rest."""
    message = f"worker error: {type(exc).__name__}: {exc}"[:5000]
    try:
        with transaction.atomic():
            EmailJob.objects.filter(pk=email.pk, claim_token=email.claim_token).update(
                last_error=message, error_class=f"{type(exc).__module__}.{type(exc).__qualname__}"
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
    """Put back emails whose job ran before their time (never send early)."""
    with transaction.atomic():
        for email in emails:
            # Point the row at its new job, or the sweeper would see the finished old one.
            EmailJob.objects.filter(pk=email.pk, status=email.status).update(
                rq_job_id=email_job_id(email.pk)
            )
        deliveries_enqueue_on_commit(
            [
                DeliveryJob(
                    job_id=email_job_id(email.pk),
                    email_ids=(str(email.pk),),
                    priority=email.priority,
                    run_at=(
                        email.next_attempt_at
                        if email.status == EmailStatus.RETRYING
                        else email.send_at
                    ),
                )
                for email in emails
            ]
        )
    return len(emails)
