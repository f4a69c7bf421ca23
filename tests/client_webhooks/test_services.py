"""Attempts against slow receivers: a call ends at its deadline and counts as a failure, and a
job stopped halfway by RQ's timeout keeps what it did."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from client_webhooks import http
from client_webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from client_webhooks.services import (
    CLAIM_SECONDS,
    RETRY_DELAYS_SECONDS,
    webhook_deliveries_attempt,
    webhook_endpoint_create,
)
from mailqueue.models import Client
from mailqueue.services import email_create
from tracking.services import NewEvent, events_record

pytestmark = pytest.mark.django_db

# Short, so the test does not wait the 10 s of production for each slow call.
TEST_DEADLINE_SECONDS = 2.0


def delivery_for(client: Client, event_type: str) -> WebhookDelivery:
    """The delivery an event of a new email of the client becomes (one wanting endpoint)."""
    email = email_create(client=client, to=["ada@example.com"], subject="s", text="t")
    events_record(events=[NewEvent(email_id=email.pk, event_type=event_type)])
    return WebhookDelivery.objects.get(payload__email__id=str(email.pk))


@pytest.mark.parametrize(("phase", "status_code"), [("headers", None), ("body", 200)])
def test_a_trickling_endpoint_is_cut_off_at_the_deadline(
    issued_key, trickler_for, monkeypatch, phase, status_code
):
    """A receiver that answers one byte every 0.5 s (in its status line, or in its body after
    a 200) holds the call no longer than the deadline; the attempt is a failure, retried."""
    monkeypatch.setattr(http, "DEADLINE_SECONDS", TEST_DEADLINE_SECONDS)
    trickler = trickler_for(phase)
    client = issued_key.api_key.client
    endpoint = webhook_endpoint_create(client=client, url=trickler.url, events=["*"])
    delivery = delivery_for(client, "delivered")

    started = time.monotonic()
    counts = webhook_deliveries_attempt(delivery_ids=[delivery.pk])
    elapsed = time.monotonic() - started

    assert counts == {"delivered": 0, "retrying": 1, "failed": 0}
    assert TEST_DEADLINE_SECONDS <= elapsed < TEST_DEADLINE_SECONDS + 1
    # The receiver was still dripping when the call hung up on it.
    assert trickler.hung_up.wait(timeout=2)
    assert 2 <= trickler.bytes_sent < 10
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == status_code
    assert attempt.error == "DeadlineExceeded: no complete answer within 2 s"
    assert 2000 <= attempt.duration_ms < 3000
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING and delivery.attempts == 1
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert RETRY_DELAYS_SECONDS[0] - 1 < wait <= RETRY_DELAYS_SECONDS[0]
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1


def test_a_job_stopped_by_its_timeout_keeps_what_it_did(issued_key, receiver, trickler_for):
    """RQ's job timeout stops a job during a slow call: the delivery sent before it stays
    delivered and logged, the one in flight waits for its retry time instead of being sent
    again at once, and the one after it is still due, for the next job to send."""
    trickler = trickler_for("headers")
    client = issued_key.api_key.client
    webhook_endpoint_create(client=client, url=receiver.url, events=["sent", "opened"])
    slow_endpoint = webhook_endpoint_create(client=client, url=trickler.url, events=["delivered"])
    before = delivery_for(client, "sent")
    slow = delivery_for(client, "delivered")
    after = delivery_for(client, "opened")
    ids = [before.pk, slow.pk, after.pk]

    # What RQ does to a job that runs past its timeout (SIGALRM in the work horse).
    with pytest.raises(JobTimeoutException), UnixSignalDeathPenalty(1, JobTimeoutException):
        webhook_deliveries_attempt(delivery_ids=ids)

    for delivery in (before, slow, after):
        delivery.refresh_from_db()
    assert before.status == WebhookDeliveryStatus.DELIVERED
    assert before.attempts_made.get().status_code == 200
    assert slow.status == WebhookDeliveryStatus.PENDING and slow.attempts == 0
    assert slow.next_attempt_at > timezone.now() + timedelta(seconds=CLAIM_SECONDS - 5)
    assert after.status == WebhookDeliveryStatus.PENDING and after.attempts == 0
    assert after.next_attempt_at <= timezone.now()

    # The job again (the sweeper's, say): only what is due is sent, nothing twice.
    assert webhook_deliveries_attempt(delivery_ids=ids) == {
        "delivered": 1,
        "retrying": 0,
        "failed": 0,
    }
    after.refresh_from_db()
    assert after.status == WebhookDeliveryStatus.DELIVERED
    assert [payload["type"] for payload in receiver.payloads()] == ["sent", "opened"]
    assert trickler.requests == 1
    assert WebhookEndpoint.objects.get(pk=slow_endpoint.pk).consecutive_failures == 0
