"""Queue control: pause and resume a priority, and hold back what comes due while it is paused.

A pause is a row in PostgreSQL (`QueuePause`), read by the claim statements themselves, so it
survives worker and Redis restarts and costs a worker no extra query or Redis call per email.
"""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from mailqueue.errors import QueueNotFound
from mailqueue.models import EmailJob, EmailStatus, Priority, QueuePause
from mailqueue.scheduling import drains_request_on_commit


def _check_priority(priority: str) -> None:
    if priority not in Priority.values:
        raise QueueNotFound(f"No queue named '{priority}'; use {', '.join(Priority.values)}.")


def queue_pause(*, priority: str, paused_by: str = "") -> QueuePause:
    """Stop workers claiming emails of a priority (it keeps accepting them); idempotent."""
    _check_priority(priority)
    pause, _ = QueuePause.objects.get_or_create(
        priority=priority, defaults={"paused_by": paused_by[:150]}
    )
    return pause


def queue_resume(*, priority: str) -> None:
    """Let workers claim a paused priority again and request a drain for what waited."""
    _check_priority(priority)
    with transaction.atomic():
        QueuePause.objects.filter(priority=priority).delete()
        drains_request_on_commit([priority])


def emails_hold_paused(*, email_ids: list[str]) -> int:
    """Move due scheduled and retrying emails of paused priorities among the ids to `queued`.

    Their job found the priority paused and claimed nothing: as `queued` they wait where the
    drain that resume requests finds them, instead of needing another job each.
    """
    now = timezone.now()
    return (
        EmailJob.objects.filter(pk__in=email_ids)
        .filter(
            Q(status=EmailStatus.SCHEDULED, send_at__lte=now)
            | Q(status=EmailStatus.RETRYING, next_attempt_at__lte=now)
        )
        .filter(Exists(QueuePause.objects.filter(priority=OuterRef("priority"))))
        .update(status=EmailStatus.QUEUED, next_attempt_at=None, rq_job_id="", updated_at=now)
    )
