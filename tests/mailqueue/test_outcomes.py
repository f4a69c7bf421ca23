"""Outcomes are written a small group at a time, and only by the worker that owns the email."""

import pytest
from django.db import connection

import mailqueue.services.delivery as delivery
import mailqueue.services.outcomes as outcomes
from mailqueue.models import CapturedMessage, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.services import email_create, emails_deliver
from mailqueue.services.delivery import email_decide, emails_claim
from mailqueue.services.outcomes import LEASE_LOST, decisions_record
from tracking.models import EventType, TrackingEvent


@pytest.fixture
def accept(issued_key):
    """Store queued emails (no job: the tests claim them directly)."""

    def make(count: int) -> list[EmailJob]:
        return [
            email_create(
                client=issued_key.api_key.client, to=[f"u{n}@example.com"], subject="Hi", text="x"
            )
            for n in range(count)
        ]

    return make


@pytest.fixture(params=["postgresql", "other databases"])
def writer(request, monkeypatch):
    """Run a test through the one-statement PostgreSQL writer and through the ORM writer."""
    if request.param != "postgresql":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


@pytest.mark.django_db
def test_a_group_is_written_for_owned_emails_and_attempts_for_all(accept, writer):
    """An email taken back meanwhile keeps its row and gets no event; its attempt is kept."""
    first, second = accept(2)
    claimed = emails_claim(email_ids=[str(first.pk), str(second.pk)])
    decisions = [email_decide(email=email) for email in claimed]
    # The sweeper took the second email back (and another worker may have claimed it since).
    EmailJob.objects.filter(pk=second.pk).update(status=EmailStatus.RETRYING, claim_token=None)

    statuses = decisions_record(decisions)

    assert statuses == [EmailStatus.SENT, LEASE_LOST]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.attempts, first.provider) == (EmailStatus.SENT, 1, "capture")
    assert first.claim_token is None and first.lease_expires_at is None
    assert first.message_id and first.sent_at
    assert second.status == EmailStatus.RETRYING
    assert DeliveryAttempt.objects.filter(email__in=[first, second]).count() == 2
    sent_events = TrackingEvent.objects.filter(event_type=EventType.SENT)
    assert list(sent_events.values_list("email_id", flat=True)) == [first.pk]
    assert CapturedMessage.objects.count() == 2  # both were handed over


@pytest.mark.django_db
def test_a_failure_keeps_the_columns_it_does_not_change(accept, writer, settings):
    """A failed render writes its error and keeps the stored subject (NULL means keep)."""
    settings.EMAIL_PROVIDERS = ["nonexistent"]
    (email,) = accept(1)
    (claimed,) = emails_claim(email_ids=[str(email.pk)])

    (status,) = decisions_record([email_decide(email=claimed)])

    email.refresh_from_db()
    assert status == EmailStatus.RETRYING
    assert email.subject == "Hi"
    assert email.error_class == "configuration"
    assert email.next_attempt_at is not None
    assert email.rq_job_id.startswith("retry-")


@pytest.mark.django_db
def test_outcomes_are_written_at_most_ten_at_a_time(accept, monkeypatch, settings):
    """A crash loses at most the emails in flight and one group of held outcomes."""
    settings.MAILQUEUE_WORKER_CONCURRENCY = 3
    emails = accept(25)
    groups = []

    def record(decisions):
        groups.append(len(decisions))
        return decisions_record(decisions)

    monkeypatch.setattr(delivery, "decisions_record", record)

    report = emails_deliver(email_ids=[str(email.pk) for email in emails])

    assert report.sent == 25
    assert sum(groups) == 25
    assert max(groups) <= delivery.OUTCOME_GROUP_SIZE == 10


@pytest.mark.django_db
def test_report_counts_lost_and_crashed_emails(accept, monkeypatch):
    """The job's report says which emails were sent, lost to another owner, or crashed."""
    emails = accept(3)
    lost, crashing = emails[1].pk, emails[2].pk
    decide = delivery.email_decide

    def flaky(*, email):
        if email.pk == crashing:
            raise RuntimeError("bug in a filter")
        return decide(email=email)

    def record(decisions):
        # The sweeper takes one email back while it is being sent.
        EmailJob.objects.filter(pk=lost).update(claim_token=None)
        return decisions_record(decisions)

    monkeypatch.setattr(delivery, "email_decide", flaky)
    monkeypatch.setattr(delivery, "decisions_record", record)

    report = emails_deliver(email_ids=[str(email.pk) for email in emails])

    assert (report.sent, report.lost, report.crashed) == (1, 1, 1)
    crashed = EmailJob.objects.get(pk=crashing)
    assert crashed.status == EmailStatus.SENDING  # the sweeper takes it back after its lease
    assert crashed.last_error == "worker error: RuntimeError: bug in a filter"


def test_outcome_module_exposes_lease_lost():
    """The delivery service and the writer agree on the lost-lease answer."""
    assert delivery.LEASE_LOST == outcomes.LEASE_LOST


@pytest.mark.django_db
def test_a_failing_webhook_dispatch_does_not_undo_or_fail_the_outcomes(accept, monkeypatch):
    """The outcomes are written before outbound webhooks are created: if creating them fails
    (the database refused it, say), the group still counts as written, so the job goes on and
    no email is sent twice."""
    [email] = accept(1)
    claimed = emails_claim(email_ids=[str(email.pk)])

    def broken(*args, **kwargs):
        raise RuntimeError("webhook deliveries could not be created")

    monkeypatch.setattr(outcomes, "webhooks_dispatch", broken)
    statuses = decisions_record([email_decide(email=e) for e in claimed])

    assert statuses == [EmailStatus.SENT]
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
