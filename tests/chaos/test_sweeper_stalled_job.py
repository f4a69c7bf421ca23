"""What the chaos run found: a worker SIGKILLed between taking an email's job off its queue and
claiming the email left the job `started` by a worker whose Redis key outlived it, so the sweeper
took the job for alive and the email waited (minutes, in the run) instead of being requeued."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rq.utils import utcformat

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler, jobs_alive
from mailqueue.services import email_create, emails_sweep
from tests.helpers import run_worker
from tests.live import sleep_until


@pytest.fixture
def stalled_email(issued_key, settings, django_capture_on_commit_callbacks):
    """A scheduled email whose job a worker took, marked `started` and died with, unclaimed;
    the dead worker's key is still in Redis. Returns (email, set_started_at)."""
    settings.MAILQUEUE_SWEEP_GRACE_SECONDS = 5
    with django_capture_on_commit_callbacks(execute=True):
        email = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            subject="Hi",
            text="Hello",
            send_at=timezone.now() + timedelta(milliseconds=200),
        )
    sleep_until(email.send_at)
    get_scheduler().enqueue_jobs()
    redis = redis_connection()
    redis.lrem("rq:queue:default", 0, email.rq_job_id)  # the dead worker's pop
    redis.set("rq:worker:killed-worker", "its key, not yet expired")
    # Settled long ago as far as the sweeper's grace period is concerned.
    EmailJob.objects.filter(pk=email.pk).update(updated_at=timezone.now() - timedelta(minutes=1))

    def started(seconds_ago: float) -> None:
        redis.hset(
            f"rq:job:{email.rq_job_id}",
            mapping={
                "status": "started",
                "worker_name": "killed-worker",
                "started_at": utcformat(timezone.now() - timedelta(seconds=seconds_ago)),
            },
        )

    return email, started


@pytest.mark.django_db
def test_job_started_long_ago_by_a_dead_worker_is_requeued_and_sent_once(smtp_sink, stalled_email):
    """Started more than the grace period ago and its email still unclaimed: requeued."""
    email, started = stalled_email
    started(seconds_ago=20)
    assert jobs_alive([email.rq_job_id]) == {email.rq_job_id: True}  # the trap

    assert emails_sweep().requeued == 1
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_job_started_a_moment_ago_is_left_to_its_worker(smtp_sink, stalled_email):
    """Within the grace period a started job may be claiming right now: not requeued."""
    email, started = stalled_email
    started(seconds_ago=0)

    assert emails_sweep().requeued == 0
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
