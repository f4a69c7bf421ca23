"""Stopping workers and the scheduler with signals: nothing lost, nothing sent twice needlessly."""

import asyncio
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from django.db import connection, transaction
from django.utils import timezone

from mailqueue.liveness import SCHEDULERS_KEY
from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue, get_scheduler
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import BatchRecipient, batch_create
from mailqueue.services import delivery as delivery_module
from mailqueue.services.delivery import (
    emails_claim_queued,
    emails_release,
    queue_drain,
    smtp_message_id,
)
from tests.helpers import queue_lengths
from tests.live import live_env, process_logs, processes, scheduled_entries, wait_until
from tests.smtp_sink import SmtpSink

WORKER = ["rqworker", "high", "default", "low"]


class SlowSmtpSink(SmtpSink):
    """An SMTP server that takes `delay` seconds to confirm each message it has received.

    A message counts as received as soon as its data has arrived, before the confirmation: a
    client that dies while waiting for it has still delivered it (the pessimistic case).
    """

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.05
        # Message-IDs of the messages held a second or more before their confirmation.
        self.stalled: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        """Store the message, then wait `delay` seconds before answering."""
        delay = self.delay
        reply = await super().handle_DATA(server, session, envelope)
        if delay >= 1:
            self.stalled.append(self.messages[-1].message["Message-ID"])
        await asyncio.sleep(delay)
        return reply


@pytest.fixture
def slow_sink():
    """A running SlowSmtpSink."""
    sink = SlowSmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def stop_requested(monkeypatch) -> threading.Event:
    """A stop flag of this test's own, already set: the process-wide one stays clear."""
    event = threading.Event()
    event.set()
    monkeypatch.setattr(delivery_module, "_stop_requested", event)
    return event


def _accept_batch(client, count: int) -> list[str]:
    """Accept a batch of `count` emails (committed, its drain enqueued); return their ids."""
    batch = batch_create(
        client=client,
        template="welcome",
        recipients=[
            BatchRecipient(to=[f"user{n}@example.com"], context={"name": f"U{n}"}, metadata={})
            for n in range(count)
        ],
    )
    return [str(pk) for pk in batch.emails.values_list("pk", flat=True)]


def _worker_env(sink: SmtpSink, **extra: str) -> dict[str, str]:
    return live_env(
        EMAIL_PROVIDERS="smtp",
        EMAIL_URL=f"smtp://{sink.host}:{sink.port}",
        EMAIL_TIMEOUT="30",
        LOG_LEVEL="INFO",
        **extra,
    )


def _log_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def _statuses() -> Counter:
    return Counter(EmailJob.objects.values_list("status", flat=True))


def _stop(process, *, timeout: float) -> float:
    """Seconds from SIGTERM to the process's exit."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=timeout)
    return time.monotonic() - signalled


@pytest.mark.django_db(transaction=True)
def test_sigterm_mid_chunk_finishes_the_sends_in_hand_and_gives_the_rest_to_another_worker(
    issued_key, welcome_template, slow_sink, tmp_path
):
    """120 emails; the first worker is stopped after a few; the second sends the rest, once."""
    _accept_batch(issued_key.api_key.client, 120)
    env = _worker_env(slow_sink, MAILQUEUE_WORKER_CONCURRENCY="2")
    first_logs = _log_dir(tmp_path, "first")

    with processes([WORKER], env, first_logs) as [first]:
        wait_until(
            lambda: len(slow_sink.messages) >= 5, timeout=30, what="first sends", logs=first_logs
        )
        exit_seconds = _stop(first, timeout=15)
    assert first.returncode == 0, process_logs(first_logs)
    assert exit_seconds < 5, process_logs(first_logs)

    # Every send that reached the server is recorded; the rest are claimable again right now.
    statuses = _statuses()
    sent_by_first = len(slow_sink.messages)
    assert statuses == {EmailStatus.SENT: sent_by_first, EmailStatus.QUEUED: 120 - sent_by_first}
    assert 5 <= sent_by_first < 100
    queued = EmailJob.objects.filter(status=EmailStatus.QUEUED)
    assert not queued.exclude(claim_token=None, lease_expires_at=None, rq_job_id="").exists()

    second_logs = _log_dir(tmp_path, "second")
    with processes([WORKER], env, second_logs):
        wait_until(
            lambda: _statuses() == {EmailStatus.SENT: 120},
            timeout=60,
            what="every email sent",
            logs=second_logs,
        )

    received = Counter(message.message["Message-ID"] for message in slow_sink.messages)
    assert len(received) == 120
    assert set(received.values()) == {1}
    assert set(EmailJob.objects.values_list("attempts", flat=True)) == {1}
    assert DeliveryAttempt.objects.count() == 120


@pytest.mark.django_db(transaction=True)
def test_second_sigterm_stops_at_once_and_the_lease_brings_the_email_in_hand_back(
    issued_key, welcome_template, slow_sink, tmp_path
):
    """One send hangs in the server; the second signal leaves it to its lease and the sweeper.

    At least once: the hung email reached the server before the worker died, and is sent again
    after the sweeper takes it back, so it is received twice (that attempt counted); every other
    email is received exactly once.
    """
    _accept_batch(issued_key.api_key.client, 30)
    env = _worker_env(slow_sink, MAILQUEUE_WORKER_CONCURRENCY="1")
    first_logs = _log_dir(tmp_path, "first")

    with processes([WORKER], env, first_logs) as [worker]:
        wait_until(
            lambda: len(slow_sink.messages) >= 3, timeout=30, what="first sends", logs=first_logs
        )
        slow_sink.delay = 60
        wait_until(lambda: slow_sink.stalled, timeout=10, what="a stalled send", logs=first_logs)
        first_signal = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        # The warm stop gives back the rest even while the send in hand waits on the server.
        wait_until(
            lambda: _statuses()[EmailStatus.SENDING] == 1,
            timeout=5,
            what="the unsent emails released",
            logs=first_logs,
        )
        assert worker.poll() is None
        # RQ ignores a second signal within a second of the first (a pool's duplicate).
        time.sleep(max(0.0, first_signal + 1.2 - time.monotonic()))
        exit_seconds = _stop(worker, timeout=10)
    assert worker.returncode == 0, process_logs(first_logs)
    # At once: the stalled send would have held it for a minute (bounds allow for a loaded CI).
    assert exit_seconds < 5, process_logs(first_logs)

    [in_hand] = EmailJob.objects.filter(status=EmailStatus.SENDING)
    assert in_hand.lease_expires_at > timezone.now()
    hung_message_id = f"<{smtp_message_id(in_hand.pk)}>"
    assert slow_sink.stalled == [hung_message_id]
    statuses = _statuses()
    assert statuses[EmailStatus.SENT] + statuses[EmailStatus.QUEUED] == 29

    # The lease runs out (as if MAILQUEUE_LEASE_SECONDS had passed); the sweeper takes it back.
    EmailJob.objects.filter(pk=in_hand.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    slow_sink.delay = 0.01
    second_logs = _log_dir(tmp_path, "second")
    with processes([["mailqueue_sweep"]], env, second_logs) as [sweep]:
        assert sweep.wait(timeout=30) == 0, process_logs(second_logs)
    with processes([WORKER], env, second_logs):
        wait_until(
            lambda: _statuses() == {EmailStatus.SENT: 30},
            timeout=60,
            what="every email sent",
            logs=second_logs,
        )

    received = Counter(message.message["Message-ID"] for message in slow_sink.messages)
    in_hand.refresh_from_db()
    assert received.pop(hung_message_id) == 2
    assert len(received) == 29
    assert set(received.values()) == {1}
    assert in_hand.attempts == 2  # the lease-expired attempt, then the one that sent it
    assert set(EmailJob.objects.exclude(pk=in_hand.pk).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_scheduler_stopped_mid_pass_releases_its_lock_and_a_new_one_takes_over_at_once(tmp_path):
    """SIGTERM while a sweep waits on the database: the pass ends, the lock is released, exit 0."""
    redis = redis_connection()
    lock_key = get_scheduler().scheduler_lock_key
    env = live_env(MAILQUEUE_SWEEP_INTERVAL_SECONDS="1")
    first_logs = _log_dir(tmp_path, "first")

    with processes([["rqscheduler"]], env, first_logs) as [scheduler]:
        with transaction.atomic():
            # The sweep's first query waits behind this lock, in the middle of a locked pass.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {EmailJob._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            wait_until(
                lambda: redis.exists(lock_key), timeout=30, what="a locked pass", logs=first_logs
            )
            scheduler.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert scheduler.poll() is None  # finishing the pass in hand
        assert scheduler.wait(timeout=5) == 0, process_logs(first_logs)

    assert not redis.exists(lock_key)
    assert not redis.smembers(SCHEDULERS_KEY)

    # A job due in a moment is released by a new scheduler as soon as it is due.
    deliveries_enqueue(
        [
            DeliveryJob(
                job_id=f"later-{uuid4().hex}",
                email_ids=(str(uuid4()),),
                priority="default",
                run_at=timezone.now() + timedelta(seconds=1),
            )
        ]
    )
    assert len(scheduled_entries()) == 1
    second_logs = _log_dir(tmp_path, "second")
    with processes([["rqscheduler"]], env, second_logs) as [second]:
        wait_until(
            lambda: queue_lengths()["default"] == 1,
            timeout=15,
            what="the new scheduler releasing the job",
            logs=second_logs,
        )
        assert _stop(second, timeout=10) < 5
    assert second.returncode == 0
    assert not redis.exists(lock_key)


@pytest.mark.django_db(transaction=True)
def test_scheduler_second_sigterm_stops_at_once_and_still_releases_its_lock(tmp_path):
    """A pass stuck on the database is cut short by a second signal; the lock still goes."""
    redis = redis_connection()
    lock_key = get_scheduler().scheduler_lock_key
    env = live_env(MAILQUEUE_SWEEP_INTERVAL_SECONDS="1")

    with processes([["rqscheduler"]], env, tmp_path) as [scheduler], transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {EmailJob._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        wait_until(lambda: redis.exists(lock_key), timeout=30, what="a locked pass", logs=tmp_path)
        scheduler.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # While the pass is still stuck behind the table lock, which is held until the end.
        assert _stop(scheduler, timeout=10) < 5
        assert scheduler.returncode == 0, process_logs(tmp_path)
        assert not redis.exists(lock_key)


@pytest.mark.django_db
def test_release_puts_claimed_emails_back_without_counting_an_attempt(
    send, django_capture_on_commit_callbacks
):
    """Released emails are `queued` with no claim, attempts unchanged, and a drain requested."""
    emails = [send(to=f"user{n}@example.com") for n in range(3)]
    claimed = emails_claim_queued(priority="default", limit=10, job_id="drain-x")
    assert len(claimed) == 3
    redis_connection().flushdb()  # the drain that accepting them asked for is gone

    with django_capture_on_commit_callbacks(execute=True):
        released = emails_release(emails=claimed)

    assert released == 3
    for email in emails:
        email.refresh_from_db()
        assert email.status == EmailStatus.QUEUED
        assert (email.claim_token, email.lease_expires_at, email.rq_job_id) == (None, None, "")
        assert email.attempts == 0
    assert queue_lengths()["default"] == 1
    assert not DeliveryAttempt.objects.exists()


@pytest.mark.django_db
def test_release_leaves_an_email_claimed_again_by_someone_else_alone(
    send, django_capture_on_commit_callbacks
):
    """An email taken back and claimed by another worker meanwhile stays with that worker."""
    for n in range(2):
        send(to=f"user{n}@example.com")
    mine, theirs = emails_claim_queued(priority="default", limit=10)
    other_token = uuid4()
    EmailJob.objects.filter(pk=theirs.pk).update(claim_token=other_token)

    with django_capture_on_commit_callbacks(execute=True):
        assert emails_release(emails=[mine, theirs]) == 1

    theirs.refresh_from_db()
    assert (theirs.status, theirs.claim_token) == (EmailStatus.SENDING, other_token)
    mine.refresh_from_db()
    assert mine.status == EmailStatus.QUEUED


@pytest.mark.django_db
def test_drain_of_a_stopping_worker_sends_nothing_and_releases_its_claim(
    send, smtp_sink, stop_requested, django_capture_on_commit_callbacks
):
    """A drain that starts after the stop claims, then gives everything straight back."""
    for n in range(4):
        send(to=f"user{n}@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        report = queue_drain(priority="default")

    assert (report.claimed, report.released, report.sent) == (4, 4, 0)
    assert smtp_sink.messages == []
    assert _statuses() == {EmailStatus.QUEUED: 4}
