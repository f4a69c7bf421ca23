"""Outbound webhooks: registration, SSRF refusals, signed deliveries from a real worker,
retries and disabling, replays; a real local HTTP server receives them."""

import hashlib
import hmac
from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

from client_webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from client_webhooks.services import (
    LOST_AFTER_SECONDS,
    RETRY_DELAYS_SECONDS,
    webhook_deliveries_attempt,
    webhook_deliveries_replay,
    webhook_endpoint_create,
    webhooks_dispatch,
)
from mailqueue.models import EmailJob
from mailqueue.scheduling import get_scheduler
from mailqueue.services import email_create, emails_sweep
from tests.helpers import run_worker
from tracking.services import NewEvent, events_record

pytestmark = pytest.mark.django_db


def verify(secret: str, header: str, body: bytes) -> bool:
    """How a receiver checks Mailqueue-Signature (the README's snippet)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


def register(api, url: str, events: list[str]) -> dict:
    response = api.post("/api/v1/webhooks/", {"url": url, "events": events}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_sent_email_reaches_the_endpoint_signed(
    api, receiver, smtp_sink, django_capture_on_commit_callbacks
):
    """An email sent by a real worker POSTs a `sent` event, signed with the endpoint's secret."""
    endpoint = register(api, receiver.url, ["sent", "delivered"])
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/emails/",
            {
                "to": ["ada@example.com"],
                "subject": "Hi",
                "text": "Hello",
                "tags": ["welcome"],
                "metadata": {"user": "42"},
            },
            format="json",
        )
    email_id = response.json()["id"]

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()
    run_worker()

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/mailqueue"
    assert verify(endpoint["secret"], request["headers"]["Mailqueue-Signature"], request["body"])
    assert not verify("whsec_other", request["headers"]["Mailqueue-Signature"], request["body"])
    payload = receiver.payloads()[0]
    assert payload["type"] == "sent"
    assert payload["email"] == {
        "id": email_id,
        "to": ["ada@example.com"],
        "tags": ["welcome"],
        "metadata": {"user": "42"},
        "batch": None,
    }
    assert set(payload) == {"id", "type", "created_at", "email", "data"}
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED
    assert delivery.attempts_made.get().status_code == 200


def test_events_the_endpoint_did_not_ask_for_are_not_sent(issued_key, receiver):
    """An endpoint for `bounced` gets bounces only; `*` gets everything."""
    bounces = webhook_endpoint_create(
        client=issued_key.api_key.client, url=receiver.url, events=["bounced"]
    )
    every = webhook_endpoint_create(
        client=issued_key.api_key.client, url=receiver.url, events=["*"]
    )
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )

    events_record(
        events=[
            NewEvent(email_id=email.pk, event_type="opened"),
            NewEvent(email_id=email.pk, event_type="bounced", recipient="ada@example.com"),
        ]
    )

    assert sorted(WebhookDelivery.objects.values_list("endpoint_id", "event_type")) == sorted(
        [(bounces.pk, "bounced"), (every.pk, "opened"), (every.pk, "bounced")]
    )
    bounced = WebhookDelivery.objects.filter(event_type="bounced").first()
    assert bounced.payload["data"]["recipient"] == "ada@example.com"


def test_dispatch_costs_no_query_for_a_client_without_endpoints(
    issued_key, api_for, receiver, django_assert_num_queries
):
    """With endpoints cached, events of an email whose client has none cost no query."""
    other = api_for("globex", ["send"])
    register(other, receiver.url, ["*"])
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    webhooks_dispatch([])  # loads this process's copy of the endpoints

    with django_assert_num_queries(0):
        created = webhooks_dispatch(
            [{"email_id": email.pk, "type": "sent", "occurred_at": timezone.now()}],
            emails={email.pk: email},
        )

    assert created == 0


def test_dispatch_costs_nothing_when_no_endpoint_exists(issued_key, django_assert_num_queries):
    """No endpoint anywhere: the worker's call makes no query (once the copy is loaded)."""
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    webhooks_dispatch([])

    with django_assert_num_queries(0):
        assert webhooks_dispatch([{"email_id": email.pk, "type": "sent"}]) == 0


def come_due(delivery: WebhookDelivery) -> None:
    """Its retry time has come (instead of waiting for it)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_delivery_is_attempted_only_when_due_and_a_lost_one_is_enqueued_again(
    issued_key, receiver, django_capture_on_commit_callbacks
):
    """A second job for a delivery waiting for its retry sends nothing; a pending delivery
    whose job was lost (overdue) is enqueued again by the sweeper and then delivered."""
    receiver.status = 500
    webhook_endpoint_create(client=issued_key.api_key.client, url=receiver.url, events=["*"])
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    events_record(events=[NewEvent(email_id=email.pk, event_type="delivered")])
    delivery = WebhookDelivery.objects.get()
    webhook_deliveries_attempt(delivery_ids=[delivery.pk])  # fails: retry scheduled

    webhook_deliveries_attempt(delivery_ids=[delivery.pk])  # a duplicate job, too early
    assert len(receiver.requests) == 1

    receiver.status = 200
    late = timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 60)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=late)
    django_rq.get_queue("webhooks").empty()
    for job in list(get_scheduler().get_jobs()):  # the job is lost (a Redis flush, say)
        get_scheduler().cancel(job)

    # The queue enqueues on commit, as the sweeper's own pass (outside a transaction) does.
    with django_capture_on_commit_callbacks(execute=True):
        assert emails_sweep().webhook_deliveries == 1
    assert emails_sweep().webhook_deliveries == 0  # its new job is not late yet
    run_worker("webhooks")
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED
    assert len(receiver.requests) == 2


def test_failing_endpoint_is_retried_then_disabled(issued_key, receiver, settings):
    """A 500 is retried later (each attempt logged); many in a row disable the endpoint."""
    settings.MAILQUEUE_WEBHOOK_DISABLE_AFTER = 3
    receiver.status = 500
    endpoint = webhook_endpoint_create(
        client=issued_key.api_key.client, url=receiver.url, events=["*"]
    )
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    events_record(events=[NewEvent(email_id=email.pk, event_type="delivered")])
    delivery = WebhookDelivery.objects.get()

    assert webhook_deliveries_attempt(delivery_ids=[delivery.pk]) == {
        "delivered": 0,
        "retrying": 1,
        "failed": 0,
    }
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert RETRY_DELAYS_SECONDS[0] - 1 < wait <= RETRY_DELAYS_SECONDS[0]
    # The retry waits in the scheduler, on the webhooks queue.
    [job] = get_scheduler().get_jobs()
    assert job.origin == "webhooks" and job.args == ([delivery.pk],)

    for _ in range(2):
        come_due(delivery)
        webhook_deliveries_attempt(delivery_ids=[delivery.pk])

    endpoint.refresh_from_db()
    assert endpoint.active is False and endpoint.disabled_at is not None
    assert endpoint.consecutive_failures == 3
    assert (
        list(WebhookAttempt.objects.values_list("status_code", "response_excerpt"))
        == [(500, "boom")] * 3
    )
    assert len(receiver.requests) == 3
    # Nothing more goes to a disabled endpoint.
    come_due(delivery)
    webhook_deliveries_attempt(delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert len(receiver.requests) == 3


def test_replay_sends_a_delivered_event_again(issued_key, receiver):
    """The admin's replay queues deliveries since a time again, and the worker sends them."""
    webhook_endpoint_create(client=issued_key.api_key.client, url=receiver.url, events=["*"])
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    started = timezone.now()
    events_record(events=[NewEvent(email_id=email.pk, event_type="delivered")])
    delivery = WebhookDelivery.objects.get()
    webhook_deliveries_attempt(delivery_ids=[delivery.pk])

    assert webhook_deliveries_replay(since=started) == 1
    webhook_deliveries_attempt(delivery_ids=[delivery.pk])

    assert len(receiver.requests) == 2
    assert receiver.payloads()[0]["id"] == receiver.payloads()[1]["id"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "http://example.com/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[::ffff:192.168.1.1]/hook",
        # 6to4, NAT64 and Teredo addresses that carry a loopback or private IPv4 address.
        "https://[2002:7f00:1::]/hook",
        "https://[2002:a9fe:a9fe::1]/hook",
        "https://[64:ff9b::7f00:1]/hook",
        "https://[64:ff9b::a01:203]/hook",
        "https://[64:ff9b:1::808:808]/hook",
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
    ],
)
def test_unsafe_urls_are_refused_at_registration(api, settings, url):
    """Without MAILQUEUE_WEBHOOK_ALLOW_PRIVATE, only https to a public address is accepted."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = False

    response = api.post("/api/v1/webhooks/", {"url": url, "events": ["*"]}, format="json")

    assert response.status_code == 400
    assert "url" in response.json()
    assert not WebhookEndpoint.objects.exists()


def test_address_is_checked_again_at_delivery(issued_key, receiver, settings):
    """An endpoint whose address is no longer allowed gets no request; the attempt says why."""
    webhook_endpoint_create(client=issued_key.api_key.client, url=receiver.url, events=["*"])
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    events_record(events=[NewEvent(email_id=email.pk, event_type="delivered")])
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = False

    webhook_deliveries_attempt(delivery_ids=[WebhookDelivery.objects.get().pk])

    assert receiver.requests == []
    assert WebhookAttempt.objects.get().error.startswith("refused:")


def test_redirects_are_not_followed(issued_key, receiver):
    """A 302 is a failed attempt, never a request to where it points."""
    receiver.status = 302
    webhook_endpoint_create(client=issued_key.api_key.client, url=receiver.url, events=["*"])
    email = email_create(
        client=issued_key.api_key.client, to=["ada@example.com"], subject="s", text="t"
    )
    events_record(events=[NewEvent(email_id=email.pk, event_type="delivered")])

    counts = webhook_deliveries_attempt(delivery_ids=[WebhookDelivery.objects.get().pk])

    assert counts["retrying"] == 1
    assert len(receiver.requests) == 1


def test_endpoint_api_lifecycle(api, api_for, receiver):
    """Create shows the secret once; list and read hide it; PATCH and DELETE work; other
    clients see 404."""
    created = register(api, receiver.url, ["sent"])
    assert created["secret"].startswith("whsec_")
    detail = f"/api/v1/webhooks/{created['id']}/"

    listed = api.get("/api/v1/webhooks/").json()
    assert [item["id"] for item in listed] == [created["id"]]
    assert "secret" not in listed[0] and "secret" not in api.get(detail).json()

    changed = api.patch(detail, {"events": ["bounced", "*"], "active": False}, format="json")
    assert changed.status_code == 200
    assert changed.json()["events"] == ["bounced", "*"] and changed.json()["active"] is False

    assert api_for("globex", ["send"]).get(detail).status_code == 404
    assert api_for("readonly", ["read"]).get("/api/v1/webhooks/").status_code == 403
    bad = api.post("/api/v1/webhooks/", {"url": receiver.url, "events": ["nope"]}, format="json")
    assert bad.status_code == 400 and "events" in bad.json()

    assert api.delete(detail).status_code == 204
    assert api.get(detail).status_code == 404


def test_webhooks_queue_is_served_right_after_high():
    """`rqworker high default low` serves webhooks between high and default."""
    worker = run_worker("high", "default", "low")
    assert worker.queue_names() == ["high", "webhooks", "default", "low"]


def test_event_of_unlinked_or_unknown_email_is_skipped(issued_key, receiver):
    """An ESP event for no known email sends nothing (and is no error)."""
    webhook_endpoint_create(client=issued_key.api_key.client, url=receiver.url, events=["*"])
    assert webhooks_dispatch([{"email_id": None, "type": "bounced"}]) == 0
    assert EmailJob.objects.count() == 0
