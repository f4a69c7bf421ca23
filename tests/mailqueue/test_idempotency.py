"""Idempotency-Key: a repeated create returns the first answer instead of sending twice."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.test import APIClient

from mailqueue.models import Batch, EmailJob, IdempotencyRecord
from mailqueue.services import request_fingerprint

EMAILS = "/api/v1/emails/"
BODY = {"to": "ada@example.com", "subject": "Your receipt", "text": "Thanks!"}


def post(client, body: dict, key: str | None, path: str = EMAILS):
    """POST JSON with an Idempotency-Key header (or none)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, body, format="json", headers=headers)


def test_repeat_with_same_key_and_body_replays_the_first_answer(api):
    """Same key, same body: same status, same body, same Location; only one email exists."""
    first = post(api, BODY, "order-42")
    second = post(api, BODY, "order-42")

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second["Location"] == first["Location"]
    assert second["Idempotent-Replayed"] == "true"
    assert EmailJob.objects.count() == 1


def test_replay_does_not_enqueue_again(api, django_capture_on_commit_callbacks):
    """The repeat adds no second delivery job to Redis."""
    with django_capture_on_commit_callbacks(execute=True) as first_callbacks:
        post(api, BODY, "order-42")
    with django_capture_on_commit_callbacks(execute=True) as second_callbacks:
        post(api, BODY, "order-42")

    assert len(first_callbacks) == 1
    assert second_callbacks == []


def test_without_a_key_every_post_creates_an_email(api):
    """No header, no deduplication."""
    post(api, BODY, None)
    post(api, BODY, None)

    assert EmailJob.objects.count() == 2


def test_different_keys_create_different_emails(api):
    """Two keys are two requests, even with the same body."""
    first = post(api, BODY, "a")
    second = post(api, BODY, "b")

    assert first.json()["id"] != second.json()["id"]
    assert EmailJob.objects.count() == 2


def test_same_key_with_a_different_body_is_422(api):
    """Reusing a key for a different request is a 422 naming the header; nothing is created."""
    post(api, BODY, "order-42")

    response = post(api, {**BODY, "to": "bob@example.com"}, "order-42")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()
    assert EmailJob.objects.count() == 1


def test_key_in_flight_is_409(api, issued_key):
    """While the first request with a key is still running, a duplicate gets 409."""
    IdempotencyRecord.objects.create(
        client=issued_key.api_key.client,
        key="order-42",
        request_hash=request_fingerprint(method="POST", path=EMAILS, body=BODY),
        response_status=None,
        created_at=timezone.now(),
    )

    response = post(api, BODY, "order-42")

    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()
    assert EmailJob.objects.count() == 0


def test_abandoned_in_flight_key_is_taken_over(api, issued_key):
    """A reservation left by a request that died long ago does not block the key forever."""
    IdempotencyRecord.objects.create(
        client=issued_key.api_key.client,
        key="order-42",
        request_hash=request_fingerprint(method="POST", path=EMAILS, body=BODY),
        response_status=None,
        created_at=timezone.now() - timedelta(minutes=10),
    )

    response = post(api, BODY, "order-42")

    assert response.status_code == 202
    assert EmailJob.objects.count() == 1


def test_keys_are_per_client(api, api_for):
    """The same key from another client is a separate request with its own email."""
    mine = post(api, BODY, "order-42")
    theirs = post(api_for("globex", ["send"]), BODY, "order-42")

    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]
    assert "Idempotent-Replayed" not in theirs
    assert EmailJob.objects.count() == 2


def test_key_expires_after_the_ttl(api):
    """After 24 hours the key is forgotten and the same request creates a new email."""
    first = post(api, BODY, "order-42")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))

    second = post(api, BODY, "order-42")

    assert second.status_code == 202
    assert second.json()["id"] != first.json()["id"]
    assert EmailJob.objects.count() == 2


def test_key_is_remembered_within_the_ttl(api):
    """At 23 hours the key still replays."""
    first = post(api, BODY, "order-42")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=23))

    second = post(api, BODY, "order-42")

    assert second.json()["id"] == first.json()["id"]
    assert EmailJob.objects.count() == 1


def test_invalid_request_does_not_burn_the_key(api):
    """A 400 is not stored: the caller can fix the body and reuse the same key."""
    bad = post(api, {**BODY, "to": "not-an-address"}, "order-42")
    good = post(api, BODY, "order-42")

    assert bad.status_code == 400
    assert good.status_code == 202
    assert EmailJob.objects.count() == 1


def test_request_failing_inside_the_service_releases_the_key(api, welcome_template):
    """A request refused by the service (unknown template) frees the key for a corrected retry."""
    refused = post(api, {"to": "ada@example.com", "template": "nope"}, "order-42")
    welcome = {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}}
    accepted = post(api, welcome, "order-42")

    assert refused.status_code == 400
    assert accepted.status_code == 202
    assert IdempotencyRecord.objects.get().response_status == 202


def test_overlong_key_is_400(api):
    """Keys longer than 255 characters are refused up front."""
    response = post(api, BODY, "k" * 256)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert EmailJob.objects.count() == 0


def test_batches_honour_the_key_too(api, welcome_template):
    """A repeated batch with the same key returns the same batch and creates no new emails."""
    body = {"template": "welcome", "recipients": [{"to": "a@x.com", "context": {"name": "A"}}]}

    first = post(api, body, "launch-1", path="/api/v1/batches/")
    second = post(api, body, "launch-1", path="/api/v1/batches/")

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert Batch.objects.count() == 1
    assert EmailJob.objects.count() == 1


def test_same_key_on_emails_and_batches_is_a_mismatch(api, welcome_template):
    """A key belongs to one request: reusing it on another endpoint is a 422."""
    post(api, BODY, "shared")

    response = post(
        api,
        {"template": "welcome", "recipients": [{"to": "a@x.com", "context": {"name": "A"}}]},
        "shared",
        path="/api/v1/batches/",
    )

    assert response.status_code == 422
    assert Batch.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_wait_for_the_first_and_replay_it(api, issued_key):
    """Two requests with one key at the same moment: the second waits for the first's
    transaction (the key's unique index), then replays its answer; one email is created."""
    barrier = threading.Barrier(2)
    answers = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.plaintext}")
        barrier.wait()
        answers.append(post(client, BODY, "order-7"))
        connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(response.status_code for response in answers) == [202, 202]
    assert len({response.json()["id"] for response in answers}) == 1
    assert EmailJob.objects.count() == 1


def test_a_request_whose_database_fails_mid_way_leaves_its_key_free(api, issued_key, monkeypatch):
    """The key is written in the work's own transaction: a request that fails after the key's
    row was written (the database went away) leaves no record, and its retry is accepted at
    once instead of meeting 409 until the record is abandoned."""
    from mailqueue.api import views

    real = views.email_create

    def fails(**kwargs):
        real(**kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "email_create", fails)
    assert post(api, BODY, "order-8").status_code == 503
    monkeypatch.setattr(views, "email_create", real)

    assert not IdempotencyRecord.objects.exists()
    retry = post(api, BODY, "order-8")
    assert retry.status_code == 202
    assert EmailJob.objects.count() == 1
