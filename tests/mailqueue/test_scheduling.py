"""Scheduled sends leave at send_at, never before; cancelled ones never leave.

The last test runs the real `rqscheduler` and `rqworker` commands as separate processes
(helpers in tests/live.py).
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import Job

from mailqueue.models import CapturedMessage, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from mailqueue.services import email_cancel, email_create
from mailqueue.tasks import deliver_emails
from tests.helpers import queue_lengths, run_worker
from tests.live import (
    live_env,
    processes,
    scheduled_entries,
    scheduler_and_worker_are_up,
    sleep_until,
    wait_until,
)


@pytest.fixture
def schedule(issued_key, django_capture_on_commit_callbacks):
    """Accept one email due at `send_at`; its job reaches Redis as on a real commit."""

    def make(send_at, to: str = "ada@example.com") -> EmailJob:
        with django_capture_on_commit_callbacks(execute=True):
            return email_create(
                client=issued_key.api_key.client,
                to=[to],
                subject="Reminder",
                text="Your appointment",
                send_at=send_at,
            )

    return make


@pytest.mark.django_db
def test_scheduled_email_waits_for_send_at_and_then_goes_out(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """Before send_at neither the scheduler nor a worker sends it; after, they do."""
    send_at = timezone.now() + timedelta(seconds=1.5)
    email = schedule(send_at)

    assert email.status == EmailStatus.SCHEDULED
    assert scheduled_entries() == {email.rq_job_id: send_at.timestamp()}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}

    get_scheduler().enqueue_jobs()
    run_worker()
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED

    # A job that runs early (a retried or duplicated job) puts the email back, unsent.
    with django_capture_on_commit_callbacks(execute=True):
        report = deliver_emails([str(email.pk)])
    assert report["claimed"] == 0
    assert report["rescheduled"] == 1
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
    assert scheduled_entries()[email.rq_job_id] == send_at.timestamp()

    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()

    assert len(smtp_sink.messages) == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.sent_at >= send_at


@pytest.mark.django_db
def test_email_put_back_by_an_early_job_keeps_its_new_job_past_the_old_jobs_expiry(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """An email more than ten minutes ahead, put back by a job that ran early, is sent by its new
    job: the old job's id is marked finished (and expires) when it ends, the new one is not."""
    send_at = timezone.now() + timedelta(minutes=11)
    email = schedule(send_at)
    early_job_id = email.rq_job_id
    redis_connection().zadd(get_scheduler().scheduled_jobs_key, {early_job_id: time.time() - 1})
    get_scheduler().enqueue_jobs()
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()
    email.refresh_from_db()
    new_job = Job.fetch(email.rq_job_id, connection=redis_connection())

    assert email.rq_job_id != early_job_id
    assert Job.fetch(early_job_id, connection=redis_connection()).get_status() == "finished"
    assert redis_connection().ttl(new_job.key) == -1  # no expiry: it waits as long as it must
    assert scheduled_entries() == {email.rq_job_id: send_at.timestamp()}

    # Eleven minutes later (moved forward here rather than waited for): the new job sends it.
    EmailJob.objects.filter(pk=email.pk).update(send_at=timezone.now())
    redis_connection().zadd(get_scheduler().scheduled_jobs_key, {new_job.id: time.time() - 1})
    get_scheduler().enqueue_jobs()
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_job_released_early_to_a_worker_is_put_back_and_sent_on_time(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """A worker that gets a scheduled email's job too soon (clock skew) re-schedules it."""
    send_at = timezone.now() + timedelta(seconds=1.5)
    email = schedule(send_at)
    job_id = email.rq_job_id
    # Release the scheduled job now, as a scheduler with a fast clock would.
    redis_connection().zadd(get_scheduler().scheduled_jobs_key, {job_id: time.time() - 1})
    get_scheduler().enqueue_jobs()
    assert queue_lengths()["default"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.SCHEDULED
    assert email.rq_job_id != job_id
    assert scheduled_entries() == {email.rq_job_id: send_at.timestamp()}

    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()

    assert len(smtp_sink.messages) == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.sent_at >= send_at


@pytest.mark.django_db
def test_send_at_in_the_past_is_sent_right_away(smtp_sink, schedule):
    """A send_at that has already passed is an ordinary queued email."""
    email = schedule(timezone.now() - timedelta(minutes=5))

    assert email.status == EmailStatus.QUEUED
    assert scheduled_entries() == {}
    run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert len(smtp_sink.messages) == 1


@pytest.mark.django_db
def test_cancelled_scheduled_email_is_never_sent(
    smtp_sink, schedule, django_capture_on_commit_callbacks
):
    """Cancelling before send_at removes it from the scheduler; even a stray job will not send."""
    send_at = timezone.now() + timedelta(seconds=0.5)
    email = schedule(send_at)

    with django_capture_on_commit_callbacks(execute=True):
        email_cancel(email=email)

    assert email.status == EmailStatus.CANCELLED
    assert scheduled_entries() == {}

    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()
    # Even if a job for it survived somewhere, running it now does nothing.
    report = deliver_emails([str(email.pk)])

    assert report["claimed"] == 0
    assert smtp_sink.messages == []
    email.refresh_from_db()
    assert email.status == EmailStatus.CANCELLED
    assert email.sent_at is None


@pytest.mark.django_db
def test_cancel_through_the_api_stops_a_scheduled_email(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """POST .../cancel/ before send_at: the email ends cancelled and never reaches the server."""
    send_at = timezone.now() + timedelta(seconds=2)
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(
            "/api/v1/emails/",
            {"to": ["ada@example.com"], "subject": "Later", "text": "x", "send_at": send_at},
            format="json",
        )
    assert created.json()["status"] == "scheduled"
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = api.post(f"/api/v1/emails/{created.json()['id']}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    sleep_until(send_at)
    get_scheduler().enqueue_jobs()
    run_worker()

    assert smtp_sink.messages == []
    assert api.get(f"/api/v1/emails/{created.json()['id']}/").json()["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_scheduler_and_worker_processes_send_within_seconds_of_send_at(issued_key, tmp_path):
    """End to end with the real commands: sent on time, never before send_at.

    How late "on time" is (about a second) is measured by bench/schedule_latency.py, not
    asserted here: a loaded CI machine must not turn a timing into a failure.
    """
    with processes([["rqscheduler"], ["rqworker", "high", "default", "low"]], live_env(), tmp_path):
        wait_until(
            scheduler_and_worker_are_up, timeout=20, what="scheduler and worker", logs=tmp_path
        )
        send_at = timezone.now() + timedelta(seconds=3)
        email = email_create(
            client=issued_key.api_key.client,
            to=["ada@example.com"],
            subject="On time",
            text="x",
            send_at=send_at,
        )
        assert email.status == EmailStatus.SCHEDULED

        def sent() -> bool:
            return EmailJob.objects.filter(pk=email.pk, status=EmailStatus.SENT).exists()

        wait_until(sent, timeout=15, what="the scheduled email to be sent", logs=tmp_path)

    email.refresh_from_db()
    assert email.sent_at >= email.send_at, "sent before send_at"
    assert CapturedMessage.objects.filter(email=email).count() == 1
