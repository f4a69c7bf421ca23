"""The sweeper: what PostgreSQL accepted is sent once, even if Redis forgets or a worker dies."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import Job

from mailqueue.models import (
    CapturedMessage,
    DeliveryAttempt,
    EmailJob,
    EmailStatus,
    IdempotencyRecord,
)
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import drains_pending, get_scheduler, jobs_alive
from mailqueue.services import BatchRecipient, batch_create, email_create, emails_sweep
from mailqueue.services.delivery import LEASE_LOST, email_deliver, emails_claim
from tests.helpers import queue_lengths, run_worker
from tests.live import (
    live_env,
    processes,
    scheduled_entries,
    sleep_until,
    wait_until,
)
from tracking.models import EventType


@pytest.fixture
def no_grace(settings):
    """Let the sweeper act on emails accepted a moment ago (instead of 30 s ago)."""
    settings.MAILQUEUE_SWEEP_GRACE_SECONDS = 0


def _pending_drain(priority: str = "default") -> Job:
    return Job.fetch(drains_pending()[priority], connection=redis_connection())


@pytest.mark.django_db
def test_email_whose_drain_job_was_deleted_is_drained_and_sent(smtp_sink, no_grace, send):
    """A queued email whose drain job is gone (marker left behind) gets a new drain by a sweep."""
    email = send()
    _pending_drain().delete()
    assert queue_lengths()["default"] == 0

    result = emails_sweep()

    assert result.drains == 1
    assert queue_lengths()["default"] == 1
    run_worker()
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_drain_popped_by_a_worker_killed_before_it_started_is_replaced(smtp_sink, no_grace, send):
    """A worker took the drain job off its queue and died before running it: the job still says
    `queued` but sits in no queue, so it will never run; the sweep replaces it."""
    email = send()
    job = _pending_drain()
    redis_connection().lrem(f"rq:queue:{job.origin}", 0, job.id)  # what the dead worker's pop did
    assert job.get_status(refresh=True) == "queued"
    assert send("later@example.com").status == EmailStatus.QUEUED  # the marker blocks a new drain
    assert queue_lengths()["default"] == 0

    assert emails_sweep().drains == 1
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 2


@pytest.mark.django_db
def test_job_started_by_a_worker_that_died_is_not_taken_for_alive(smtp_sink, no_grace, send):
    """A `started` job whose worker's heartbeat key is gone is dead, whatever its status says."""
    email = send()
    job = _pending_drain()
    redis_connection().lrem(f"rq:queue:{job.origin}", 0, job.id)
    redis_connection().hset(job.key, mapping={"status": "started", "worker_name": "killed-worker"})
    assert jobs_alive([job.id]) == {job.id: False}
    redis_connection().set("rq:worker:killed-worker", "alive")  # were its heartbeat still fresh
    assert jobs_alive([job.id]) == {job.id: True}
    redis_connection().delete("rq:worker:killed-worker")

    assert emails_sweep().drains == 1
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT


@pytest.mark.django_db
def test_scheduled_job_popped_by_a_dead_worker_is_requeued(smtp_sink, no_grace, send):
    """An id job (a scheduled send) lost between the pop and the claim is given a new job."""
    email = send(send_at=timezone.now() + timedelta(milliseconds=200))
    sleep_until(email.send_at)
    get_scheduler().enqueue_jobs()
    redis_connection().lrem("rq:queue:default", 0, email.rq_job_id)

    assert emails_sweep().requeued == 1
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_fresh_emails_are_left_alone_during_the_grace_period(smtp_sink, settings, send):
    """An email accepted a moment ago may still be on its way to Redis: not requeued yet."""
    settings.MAILQUEUE_SWEEP_GRACE_SECONDS = 30
    send()
    redis_connection().flushdb()

    assert emails_sweep().requeued == 0
    assert queue_lengths()["default"] == 0


@pytest.mark.django_db
def test_batch_lost_in_a_redis_flush_is_sent_exactly_once(
    issued_key, smtp_sink, welcome_template, no_grace, django_capture_on_commit_callbacks
):
    """After Redis loses every job, one sweep brings the whole batch back, with no duplicates."""
    with django_capture_on_commit_callbacks(execute=True):
        batch = batch_create(
            client=issued_key.api_key.client,
            template="welcome",
            recipients=[
                BatchRecipient(to=[f"user{n}@example.com"], context={"name": "x"}, metadata={})
                for n in range(60)
            ],
        )
    redis_connection().flushdb()

    result = emails_sweep()
    second = emails_sweep()
    run_worker()
    third = emails_sweep()
    run_worker()

    assert (result.requeued, result.drains) == (0, 1)
    assert second.total == 0  # the new drain is waiting in its queue: alive
    assert third.total == 0
    assert len(smtp_sink.messages) == 60
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
        f"user{n}@example.com" for n in range(60)
    )
    assert len({m.message["Message-ID"] for m in smtp_sink.messages}) == 60
    assert set(EmailJob.objects.filter(batch=batch).values_list("status", flat=True)) == {
        EmailStatus.SENT
    }


def _claim_and_die(email: EmailJob) -> None:
    """What a worker that crashed mid-send leaves behind: `sending`, lease run out, no job."""
    assert [e.pk for e in emails_claim(email_ids=[str(email.pk)])] == [email.pk]
    EmailJob.objects.filter(pk=email.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    redis_connection().flushdb()


@pytest.mark.django_db
def test_email_of_a_dead_worker_is_taken_back_and_sent(smtp_sink, send):
    """An expired lease counts as a failed attempt; the email is retried and sent."""
    email = send()
    _claim_and_die(email)

    result = emails_sweep()

    assert result.reclaimed == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.attempts == 1
    assert "lease expired" in email.last_error
    assert email.lease_expires_at is None
    attempt = email.delivery_attempts.get()
    assert (attempt.outcome, attempt.error_class) == (
        DeliveryAttempt.Outcome.TRANSIENT,
        "lease_expired",
    )
    assert [e.event_type for e in email.events.all()] == [EventType.DEFERRED]
    assert queue_lengths()["default"] == 1

    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.attempts == 2
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_dead_worker_on_the_last_attempt_fails_the_email(smtp_sink, send):
    """With no attempts left, an expired lease fails the email instead of retrying it."""
    email = send()
    EmailJob.objects.filter(pk=email.pk).update(attempts=email.max_attempts - 1)
    _claim_and_die(email)

    result = emails_sweep()

    assert result.failed == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.attempts == email.max_attempts
    assert [e.event_type for e in email.events.all()] == [EventType.FAILED]
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    run_worker()
    assert smtp_sink.messages == []


@pytest.mark.django_db
def test_email_being_sent_under_a_live_lease_is_not_touched(smtp_sink, no_grace, send):
    """A worker still inside its lease keeps the email; the sweep neither retries nor requeues."""
    email = send()
    emails_claim(email_ids=[str(email.pk)])
    redis_connection().flushdb()

    result = emails_sweep()

    assert result.total == 0
    email.refresh_from_db()
    assert email.status == EmailStatus.SENDING
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}


@pytest.mark.django_db
def test_lost_scheduled_email_is_rescheduled_for_its_send_at(smtp_sink, no_grace, send):
    """A scheduled email whose scheduler entry was flushed is scheduled again, not sent early."""
    send_at = timezone.now() + timedelta(seconds=1.5)
    email = send(send_at=send_at)
    redis_connection().flushdb()

    result = emails_sweep()

    assert result.requeued == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
    assert email.rq_job_id.startswith("sweep-")
    assert scheduled_entries() == {email.rq_job_id: send_at.timestamp()}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    get_scheduler().enqueue_jobs()
    run_worker()
    assert smtp_sink.messages == []

    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.sent_at >= send_at
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_lost_retry_is_rescheduled_for_its_next_attempt(
    smtp_sink, no_grace, send, django_capture_on_commit_callbacks
):
    """A retrying email whose retry job was lost waits for next_attempt_at again."""
    smtp_sink.data_replies = ["451 4.3.0 Try again later"]
    email = send()
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()
    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    redis_connection().flushdb()

    assert emails_sweep().requeued == 1

    email.refresh_from_db()
    assert scheduled_entries() == {email.rq_job_id: email.next_attempt_at.timestamp()}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}


@pytest.mark.django_db
def test_sweep_does_not_duplicate_live_jobs(smtp_sink, no_grace, send):
    """Queued and scheduled emails whose jobs are still in Redis are left as they are."""
    queued = send("now@example.com")
    scheduled = send("later@example.com", send_at=timezone.now() + timedelta(hours=1))
    entries = scheduled_entries()

    first = emails_sweep()
    second = emails_sweep()

    assert first.total == second.total == 0
    assert queue_lengths() == {"high": 0, "default": 1, "low": 0}
    assert scheduled_entries() == entries
    run_worker()
    queued.refresh_from_db()
    scheduled.refresh_from_db()
    assert queued.status == EmailStatus.SENT
    assert scheduled.status == EmailStatus.SCHEDULED
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["now@example.com"]]


@pytest.mark.django_db
def test_sweep_deletes_expired_idempotency_keys(issued_key, settings):
    """Keys older than MAILQUEUE_IDEMPOTENCY_TTL_HOURS are forgotten; newer ones are kept."""
    settings.MAILQUEUE_IDEMPOTENCY_TTL_HOURS = 24
    client = issued_key.api_key.client
    now = timezone.now()
    IdempotencyRecord.objects.create(
        client=client, key="old", request_hash="a", created_at=now - timedelta(hours=25)
    )
    IdempotencyRecord.objects.create(
        client=client, key="recent", request_hash="b", created_at=now - timedelta(hours=23)
    )

    result = emails_sweep()

    assert result.idempotency_keys_expired == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["recent"]


@pytest.mark.django_db(transaction=True)
def test_running_scheduler_sweeps_a_flushed_email_back_by_itself(issued_key, tmp_path):
    """With the real processes: Redis loses a job, and the email is still sent within seconds."""
    env = live_env(MAILQUEUE_SWEEP_INTERVAL_SECONDS="1", MAILQUEUE_SWEEP_GRACE_SECONDS="1")
    with processes([["rqscheduler"]], env, tmp_path):
        wait_until(
            lambda: redis_connection().keys("rq:scheduler_instance:*"),
            timeout=20,
            what="the scheduler to start",
            logs=tmp_path,
        )
        email = email_create(
            client=issued_key.api_key.client, to=["ada@example.com"], subject="Hi", text="x"
        )
        assert queue_lengths()["default"] == 1
        redis_connection().flushdb()

        with processes([["rqworker", "high", "default", "low"]], env, tmp_path):

            def sent() -> bool:
                return EmailJob.objects.filter(pk=email.pk, status=EmailStatus.SENT).exists()

            wait_until(sent, timeout=15, what="the swept email to be sent", logs=tmp_path)

    email.refresh_from_db()
    assert email.rq_job_id.startswith("drain-default-")
    assert CapturedMessage.objects.filter(email=email).count() == 1


@pytest.mark.django_db
def test_worker_whose_lease_was_taken_back_does_not_send(smtp_sink, send):
    """A slow worker that lost its email to the sweeper neither sends it nor records an outcome."""
    email = send()
    [stale] = emails_claim(email_ids=[str(email.pk)])
    # The lease runs out while the worker is busy elsewhere; the sweeper hands the email on.
    EmailJob.objects.filter(pk=email.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    stale.lease_expires_at = timezone.now() - timedelta(seconds=1)
    emails_sweep()

    assert email_deliver(email=stale) == LEASE_LOST
    assert smtp_sink.messages == []

    run_worker()  # the rightful owner: the job the sweeper enqueued

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_stale_worker_cannot_overwrite_the_new_owners_outcome(smtp_sink, send):
    """Finishing with an old claim token changes nothing once another worker claimed the email."""
    email = send()
    [stale] = emails_claim(email_ids=[str(email.pk)])
    EmailJob.objects.filter(pk=email.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    emails_sweep()
    [owner] = emails_claim(email_ids=[str(email.pk)])
    assert owner.claim_token != stale.claim_token

    # The stale worker got as far as sending: its lease check passes (it believes half is left).
    stale.lease_expires_at = timezone.now() + timedelta(hours=1)
    assert email_deliver(email=stale) == LEASE_LOST  # it did send (at-least-once)...
    assert len(smtp_sink.messages) == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SENDING  # ...but the row still belongs to the new owner
    assert email.claim_token == owner.claim_token


@pytest.mark.django_db
def test_sweeps_resume_where_the_last_one_stopped(smtp_sink, no_grace, send, monkeypatch):
    """With more waiting emails than one sweep scans, later sweeps reach the newer ones."""
    import mailqueue.services.sweeper as sweeper

    monkeypatch.setattr(sweeper, "PAGE_SIZE", 2)
    monkeypatch.setattr(sweeper, "MAX_PAGES", 1)
    monkeypatch.setattr(sweeper, "_resume_after", None)
    send_at = timezone.now() + timedelta(milliseconds=300)
    emails = [send(to=f"user{n}@example.com", send_at=send_at) for n in range(5)]
    redis_connection().flushdb()

    requeued = [emails_sweep().requeued for _ in range(3)]

    assert requeued == [2, 2, 1]
    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()
    assert len(smtp_sink.messages) == 5
    assert all(
        e.status == EmailStatus.SENT for e in EmailJob.objects.filter(pk__in=[e.pk for e in emails])
    )
