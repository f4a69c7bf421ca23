"""The sweeper: what PostgreSQL accepted ends sent, failed or cancelled, even if Redis forgot it.

Run by the scheduler process every MAILQUEUE_SWEEP_INTERVAL_SECONDS (and by
`manage.py mailqueue_sweep`). It needs nothing from Redis to find work: the email rows say what
should be in flight, and Redis is only asked whether the matching job still exists.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

from django.db import transaction
from django.utils import timezone
from rq.job import Job
from rq.utils import utcparse

from client_webhooks.services import webhook_deliveries_requeue_lost
from mailqueue import conf
from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus, IdempotencyRecord, Priority
from mailqueue.scheduling import (
    DeliveryJob,
    connection,
    deliveries_enqueue,
    drains_pending,
    drains_request,
    email_job_id,
    jobs_alive,
)
from mailqueue.services.dead_letters import error_fields
from mailqueue.services.redaction import emails_context_redact
from tracking.models import EventType
from tracking.services import NewEvent, events_record

logger = logging.getLogger(__name__)

# Waiting for a job of their own (queued emails wait for their priority's drain instead).
WAITING_FOR_JOB = (EmailStatus.SCHEDULED, EmailStatus.RETRYING)
PAGE_SIZE = 500
MAX_PAGES = 20


@dataclass
class SweepResult:
    """What one sweep did."""

    requeued: int = 0
    drains: int = 0
    reclaimed: int = 0
    failed: int = 0
    idempotency_keys_expired: int = 0
    webhook_deliveries: int = 0

    @property
    def total(self) -> int:
        """Emails the sweep acted on."""
        return self.requeued + self.drains + self.reclaimed + self.failed

    def __str__(self) -> str:
        return (
            f"requeued={self.requeued} drains={self.drains} reclaimed={self.reclaimed} "
            f"failed={self.failed} "
            f"idempotency_keys_expired={self.idempotency_keys_expired} "
            f"webhook_deliveries={self.webhook_deliveries}"
        )


def emails_sweep() -> SweepResult:
    """Take back expired leases, re-enqueue emails and webhook deliveries whose job Redis lost,
    expire old keys."""
    result = SweepResult()
    _reclaim_expired_leases(result)
    _repair_drains(result)
    _requeue_lost_jobs(result)
    result.webhook_deliveries = webhook_deliveries_requeue_lost()
    cutoff = timezone.now() - timedelta(hours=conf.idempotency_ttl_hours())
    result.idempotency_keys_expired, _ = IdempotencyRecord.objects.filter(
        created_at__lt=cutoff
    ).delete()
    return result


_LEASE_EXPIRED = "The worker stopped before finishing this attempt (lease expired)."


def _reclaim_expired_leases(result: SweepResult) -> None:
    """A worker died (or hung) while sending: count the attempt and send again (or give up)."""
    now = timezone.now()
    expired = list(
        EmailJob.objects.filter(status=EmailStatus.SENDING, lease_expires_at__lt=now).only(
            "pk", "attempts", "max_attempts", "priority", "recipient", "secret_context_keys"
        )[: PAGE_SIZE * MAX_PAGES]
    )
    jobs = []
    with transaction.atomic():
        for email in expired:
            give_up = email.attempts + 1 >= email.max_attempts
            if not _reclaim_one(email, give_up=give_up, now=now):
                continue
            if give_up:
                result.failed += 1
            else:
                result.reclaimed += 1
                jobs.append(DeliveryJob(email_job_id(email.pk), (str(email.pk),), email.priority))
    if jobs:
        deliveries_enqueue(jobs)


def _reclaim_one(email: EmailJob, *, give_up: bool, now: datetime) -> bool:
    """Take one email back from `sending` if its lease is still expired, with the attempt and
    event that say why; False when it moved meanwhile."""
    number = email.attempts + 1
    moved = EmailJob.objects.filter(
        pk=email.pk, status=EmailStatus.SENDING, lease_expires_at__lt=now
    ).update(
        status=EmailStatus.FAILED if give_up else EmailStatus.RETRYING,
        attempts=number,
        **error_fields(error_class="lease_expired", message=_LEASE_EXPIRED),
        lease_expires_at=None,
        # The worker that held it may still be alive: it must not record an outcome.
        claim_token=None,
        next_attempt_at=None if give_up else now,
        rq_job_id=email_job_id(email.pk),
        updated_at=now,
    )
    if not moved:
        return False
    if give_up and email.secret_context_keys:
        # Final: nothing renders it again, so its secrets (a one-time code) go.
        emails_context_redact(email_ids=[email.pk])
    DeliveryAttempt.objects.create(
        email_id=email.pk,
        number=number,
        provider="",
        outcome=DeliveryAttempt.Outcome.TRANSIENT,
        error_class="lease_expired",
        error_message=_LEASE_EXPIRED,
        started_at=now,
    )
    events_record(
        events=[
            NewEvent(
                email_id=email.pk,
                event_type=EventType.FAILED if give_up else EventType.DEFERRED,
                recipient=email.recipient,
                description=_LEASE_EXPIRED,
            )
        ]
    )
    return True


def _repair_drains(result: SweepResult) -> None:
    """Request a drain for each priority whose queued emails wait with no live drain job.

    A drain's marker outlives its job when Redis lost the job, or a worker died after popping
    it and before it started: without this, accepting more email would not enqueue a drain.
    """
    settled_before = timezone.now() - timedelta(seconds=conf.sweep_grace_seconds())
    waiting = [
        priority.value
        for priority in Priority
        if EmailJob.objects.filter(
            status=EmailStatus.QUEUED, priority=priority, updated_at__lt=settled_before
        ).exists()
    ]
    if not waiting:
        return
    pending = drains_pending()
    alive = jobs_alive(pending[priority] for priority in waiting if priority in pending)
    dead = [priority for priority in waiting if not alive.get(pending.get(priority, ""))]
    if dead:
        result.drains += len(drains_request(dead, force=True))
        logger.info("sweeper: requested drains for %s (no live drain job)", ", ".join(dead))


# Where the last sweep stopped scanning, so a backlog larger than one sweep's scan (far-future
# scheduled emails, say) never hides newer emails from later sweeps. Per process; None = start.
_resume_after: tuple | None = None


def _requeue_lost_jobs(result: SweepResult) -> None:
    """Re-enqueue scheduled and retrying emails whose RQ job is gone (Redis flushed, say)."""
    global _resume_after
    now = timezone.now()
    settled_before = now - timedelta(seconds=conf.sweep_grace_seconds())
    last_key = _resume_after
    _resume_after = None
    for _ in range(MAX_PAGES):
        page = EmailJob.objects.filter(status__in=WAITING_FOR_JOB, updated_at__lt=settled_before)
        if last_key is not None:
            page = page.filter(updated_at__gte=last_key[0]).exclude(
                updated_at=last_key[0], pk__lte=last_key[1]
            )
        rows = list(
            page.order_by("updated_at", "pk").values(
                "pk", "status", "priority", "rq_job_id", "send_at", "next_attempt_at", "updated_at"
            )[:PAGE_SIZE]
        )
        if not rows:
            break
        last_key = (rows[-1]["updated_at"], rows[-1]["pk"])
        alive = jobs_alive(row["rq_job_id"] for row in rows if row["rq_job_id"])
        stalled = _jobs_started_before(
            [row["rq_job_id"] for row in rows if alive.get(row["rq_job_id"])], settled_before
        )
        lost = [
            row for row in rows if not alive.get(row["rq_job_id"]) or row["rq_job_id"] in stalled
        ]
        if lost:
            result.requeued += _requeue(lost)
        if len(rows) < PAGE_SIZE:
            break
    else:
        _resume_after = last_key  # more to scan: the next sweep goes on from here


def _jobs_started_before(job_ids: list[str], before: datetime) -> set[str]:
    """Jobs a worker started before `before` (one round trip).

    A job names emails that it claims the moment it starts (or points at a new job, when they
    are not due): one that started more than the grace period ago while an email still waits
    with its id lost its worker between taking the job and claiming it (a SIGKILL). RQ keeps
    such a job `started`, and the dead worker's key has been seen to outlive it by minutes, so
    jobs_alive() alone would call it alive and the email would wait that long.
    """
    if not job_ids:
        return set()
    pipe = connection().pipeline()
    for job_id in job_ids:
        pipe.hmget(Job.key_for(job_id), "status", "started_at")
    stalled = set()
    for job_id, (status, started_at) in zip(job_ids, pipe.execute(), strict=True):
        if status == b"started" and started_at and utcparse(started_at.decode()) < before:
            stalled.add(job_id)
    return stalled


def _requeue(rows: list[dict]) -> int:
    """Give lost emails new jobs, grouped by priority and due time, chunked like batches."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        run_at = row["next_attempt_at"] if row["status"] == EmailStatus.RETRYING else row["send_at"]
        groups.setdefault((row["priority"], run_at), []).append(row)
    jobs = []
    chunk_size = conf.batch_chunk_size()
    requeued = 0
    with transaction.atomic():
        for (priority, run_at), members in groups.items():
            for start in range(0, len(members), chunk_size):
                chunk = members[start : start + chunk_size]
                job_id = f"sweep-{uuid4().hex}"
                ids = []
                for row in chunk:
                    # Only rows still waiting with the job id we saw: a worker may have moved on.
                    if EmailJob.objects.filter(
                        pk=row["pk"], status=row["status"], rq_job_id=row["rq_job_id"]
                    ).update(rq_job_id=job_id):
                        ids.append(str(row["pk"]))
                if ids:
                    jobs.append(
                        DeliveryJob(
                            job_id=job_id, email_ids=tuple(ids), priority=priority, run_at=run_at
                        )
                    )
                    requeued += len(ids)
    deliveries_enqueue(jobs)
    if requeued:
        logger.info("sweeper: re-enqueued %d email(s) whose job was lost", requeued)
    return requeued
