"""Transient failures are retried with backoff, permanent ones fail at once, outages fail over."""

import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from mailqueue.models import CapturedMessage, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from mailqueue.services import emails_deliver
from mailqueue.services.delivery import backoff_seconds
from mailqueue.tasks import deliver_emails
from tests.helpers import queue_lengths
from tests.live import scheduled_entries
from tracking.models import EventType

pytestmark = pytest.mark.django_db

TRY_LATER = "451 4.3.0 Try again later"


def release_due_jobs(timeout: float = 3.0) -> None:
    """Wait until the earliest scheduled job is due, then run one scheduler pass."""
    entries = scheduled_entries()
    if entries:
        wait = min(entries.values()) - time.time()
        assert wait <= timeout, f"next scheduled job is {wait:.1f}s away"
        if wait > 0:
            time.sleep(wait + 0.01)
    get_scheduler().enqueue_jobs()


def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_transient_failure_is_retried_later_and_then_sent(smtp_sink, send, work):
    """A 451 defers the email with a backoff; once due, the retry job delivers it."""
    smtp_sink.data_replies = [TRY_LATER]
    email = send()

    before = timezone.now()
    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.attempts == 1
    assert "451" in email.last_error
    assert before < email.next_attempt_at <= before + timedelta(seconds=31)
    attempt = email.delivery_attempts.get()
    assert (attempt.provider, attempt.outcome) == ("smtp", DeliveryAttempt.Outcome.TRANSIENT)
    assert "451" in attempt.error_message
    deferred = email.events.get()
    assert deferred.event_type == EventType.DEFERRED
    assert deferred.data["next_attempt_at"] == email.next_attempt_at.isoformat()
    assert smtp_sink.messages == []
    # The retry waits in the scheduler until next_attempt_at, not on a queue.
    assert scheduled_entries() == {f"retry-{email.pk.hex}-1": email.next_attempt_at.timestamp()}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}

    # Time passes: the retry becomes due in PostgreSQL and in the scheduler.
    due = timezone.now() - timedelta(seconds=1)
    EmailJob.objects.filter(pk=email.pk).update(next_attempt_at=due)
    redis_connection().zadd(
        get_scheduler().scheduled_jobs_key, {f"retry-{email.pk.hex}-1": due.timestamp()}
    )
    get_scheduler().enqueue_jobs()
    assert queue_lengths()["default"] == 1
    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.attempts == 2
    assert email.last_error == ""
    assert email.next_attempt_at is None
    assert [(a.number, a.outcome) for a in email.delivery_attempts.all()] == [
        (1, DeliveryAttempt.Outcome.TRANSIENT),
        (2, DeliveryAttempt.Outcome.SENT),
    ]
    assert [e.event_type for e in email.events.all()] == [EventType.DEFERRED, EventType.SENT]
    assert len(smtp_sink.messages) == 1
    assert smtp_sink.messages[0].message["Message-ID"].strip("<>") == email.message_id


def test_retry_job_that_runs_early_does_not_send(
    smtp_sink, send, work, django_capture_on_commit_callbacks
):
    """A job for a retrying email that runs before next_attempt_at leaves it waiting."""
    smtp_sink.data_replies = [TRY_LATER]
    email = send()
    work()
    email.refresh_from_db()
    next_attempt_at = email.next_attempt_at

    with django_capture_on_commit_callbacks(execute=True):
        report = deliver_emails([str(email.pk)])

    assert report["claimed"] == 0
    assert report["rescheduled"] == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.next_attempt_at == next_attempt_at
    assert email.attempts == 1
    assert smtp_sink.messages == []
    # A job of its own, under a new id: the job that ran early keeps its id until it ends.
    assert email.rq_job_id != f"retry-{email.pk.hex}-1"
    assert scheduled_entries()[email.rq_job_id] == next_attempt_at.timestamp()


def test_permanent_failure_fails_at_once(smtp_sink, send, work):
    """A 550 for the recipient fails the email on the first attempt, with no retry queued."""
    smtp_sink.rcpt_replies["bad@example.com"] = "550 5.1.1 No such user"
    email = send("bad@example.com")

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.attempts == 1
    assert "550" in email.last_error
    assert "No such user" in email.last_error
    assert email.next_attempt_at is None
    attempt = email.delivery_attempts.get()
    assert attempt.outcome == DeliveryAttempt.Outcome.PERMANENT
    failed = email.events.get()
    assert failed.event_type == EventType.FAILED
    assert "550" in failed.description
    assert scheduled_entries() == {}
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    assert smtp_sink.messages == []


def test_permanent_failure_of_one_email_does_not_affect_the_next(smtp_sink, send, work):
    """The connection survives a refused recipient; the next email still goes out."""
    smtp_sink.rcpt_replies["bad@example.com"] = "550 5.1.1 No such user"
    bad = send("bad@example.com")
    good = send("good@example.com")

    work()

    assert EmailJob.objects.get(pk=bad.pk).status == EmailStatus.FAILED
    assert EmailJob.objects.get(pk=good.pk).status == EmailStatus.SENT
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["good@example.com"]]


def test_transient_failures_stop_after_max_attempts(smtp_sink, send, work, settings):
    """With MAILQUEUE_MAX_ATTEMPTS=3, a server that always says 451 gets exactly 3 tries."""
    settings.MAILQUEUE_MAX_ATTEMPTS = 3
    # No backoff: each retry is due at once, so it goes straight to the queue.
    settings.MAILQUEUE_RETRY_BASE_SECONDS = 0
    smtp_sink.data_replies = [TRY_LATER] * 5
    email = send()

    for _ in range(5):
        work()
        email.refresh_from_db()
        if email.status != EmailStatus.RETRYING:
            break
        release_due_jobs()

    assert email.status == EmailStatus.FAILED
    assert email.attempts == 3
    assert "451" in email.last_error
    assert [(a.number, a.outcome) for a in email.delivery_attempts.all()] == [
        (1, DeliveryAttempt.Outcome.TRANSIENT),
        (2, DeliveryAttempt.Outcome.TRANSIENT),
        (3, DeliveryAttempt.Outcome.TRANSIENT),
    ]
    assert [e.event_type for e in email.events.all()] == [
        EventType.DEFERRED,
        EventType.DEFERRED,
        EventType.FAILED,
    ]
    assert "gave up" in email.events.last().description
    # Three DATA commands were answered 451; the server was not asked a fourth time.
    assert len(smtp_sink.data_replies) == 2
    assert smtp_sink.messages == []


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 20])
def test_backoff_is_full_jitter_under_an_exponential_cap(settings, attempt):
    """Delays are spread over [0, min(max, base * 2**(n-1))]."""
    settings.MAILQUEUE_RETRY_BASE_SECONDS = 30
    settings.MAILQUEUE_RETRY_MAX_SECONDS = 3600
    ceiling = min(3600, 30 * 2 ** (attempt - 1))

    samples = [backoff_seconds(attempt) for _ in range(2000)]

    assert all(0 <= sample <= ceiling for sample in samples)
    # Full jitter: the delays cover the whole range rather than clustering at the cap.
    assert min(samples) < ceiling * 0.05
    assert max(samples) > ceiling * 0.95
    assert ceiling * 0.4 < sum(samples) / len(samples) < ceiling * 0.6


def test_unreachable_smtp_server_fails_over_to_the_next_provider(settings, send, work):
    """With the SMTP server down, the same attempt is handed to `capture`."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": free_port()}
    settings.MAILQUEUE_SMTP_TIMEOUT = 2
    email = send()

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.provider == "capture"
    assert email.attempts == 1
    assert [(a.number, a.provider, a.outcome) for a in email.delivery_attempts.all()] == [
        (1, "smtp", DeliveryAttempt.Outcome.TRANSIENT),
        (1, "capture", DeliveryAttempt.Outcome.SENT),
    ]
    captured = CapturedMessage.objects.get(email=email)
    assert captured.message_id == email.message_id
    assert captured.to == ["ada@example.com"]
    assert scheduled_entries() == {}


def test_transient_smtp_reply_fails_over_to_the_next_provider(smtp_sink, settings, send, work):
    """A 451 from the first provider is retried at the second one at once."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    smtp_sink.data_replies = [TRY_LATER]
    email = send()

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.provider == "capture"
    assert CapturedMessage.objects.filter(email=email).count() == 1
    assert smtp_sink.messages == []


def test_permanent_smtp_refusal_does_not_fail_over(smtp_sink, settings, send, work):
    """A 5xx is about the message, not the provider: the next provider is not tried."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    smtp_sink.rcpt_replies["bad@example.com"] = "550 5.1.1 No such user"
    email = send("bad@example.com")

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert [(a.provider, a.outcome) for a in email.delivery_attempts.all()] == [
        ("smtp", DeliveryAttempt.Outcome.PERMANENT)
    ]
    assert not CapturedMessage.objects.exists()


def test_all_providers_down_defers_the_email(settings, send, work):
    """When every provider fails transiently the email waits for a retry instead of failing."""
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": free_port()}
    email = send()

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.attempts == 1
    assert email.last_error
    assert f"retry-{email.pk.hex}-1" in scheduled_entries()


def test_provider_whose_circuit_opens_is_skipped_for_the_next_emails(settings, send):
    """After MAILQUEUE_BREAKER_FAILURES failures of the SMTP server, later emails go straight
    to `capture` (no call, no timeout) until the circuit's open time ends; then one probe tries
    SMTP again, and its failure opens the circuit again."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": free_port()}
    settings.MAILQUEUE_BREAKER_FAILURES = 2
    settings.MAILQUEUE_PROVIDER_COOLDOWN_SECONDS = 1.5
    # One send thread: with N, up to N emails already in flight meet the outage at once.
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    emails = [send(f"user{n}@example.com") for n in range(5)]

    # One chunk in one process, as a worker runs it (a worker's shutdown forgets circuits).
    report = emails_deliver(email_ids=[str(email.pk) for email in emails])

    assert report.sent == 5
    assert DeliveryAttempt.objects.filter(provider="smtp", email__in=emails).count() == 2
    assert CapturedMessage.objects.count() == 5
    # The route each email took: the first two failed over, the others skipped SMTP.
    descriptions = [email.events.get(event_type=EventType.SENT).description for email in emails]
    assert descriptions[:2] == ["failed over to capture: smtp failed"] * 2
    assert descriptions[2:] == ["failed over to capture: smtp skipped (circuit open)"] * 3

    time.sleep(1.6)  # the circuit's open time ends: half-open
    later = [send(f"later{n}@example.com") for n in range(3)]
    emails_deliver(email_ids=[str(email.pk) for email in later])

    # One probe (refused connection: the circuit opens again), the others skip SMTP.
    assert DeliveryAttempt.objects.filter(email__in=later, provider="smtp").count() == 1
    assert all(
        email.status == EmailStatus.SENT
        for email in EmailJob.objects.filter(pk__in=[email.pk for email in later])
    )


def test_all_providers_circuits_open_defers_without_using_an_attempt(
    settings, send, django_capture_on_commit_callbacks
):
    """With the only provider's circuit open, the next emails wait for its open time to end:
    nothing is tried and no attempt is used up, so even a last attempt is not wasted."""
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": free_port()}
    settings.MAILQUEUE_MAX_ATTEMPTS = 1
    settings.MAILQUEUE_BREAKER_FAILURES = 1
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1  # the second email is sent after the first fails
    first, second = send("a@example.com"), send("b@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        emails_deliver(email_ids=[str(first.pk), str(second.pk)])

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == EmailStatus.FAILED  # tried, refused connection, its only attempt
    assert second.status == EmailStatus.RETRYING
    assert second.attempts == 0
    assert not second.delivery_attempts.exists()
    assert "circuit is open" in second.last_error
    assert 25 < (second.next_attempt_at - timezone.now()).total_seconds() <= 30
    assert second.rq_job_id in scheduled_entries()
