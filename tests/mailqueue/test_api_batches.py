"""POST/GET /api/v1/batches/: one template to many recipients, enqueued in chunks."""

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

import mailqueue.services.delivery as delivery
from mailqueue.models import Batch, CapturedMessage, EmailJob
from mailqueue.scheduling import get_scheduler
from tests.helpers import queue_lengths, run_worker

BATCHES = "/api/v1/batches/"
ALL_STATUSES = {
    "scheduled",
    "queued",
    "sending",
    "retrying",
    "sent",
    "failed",
    "cancelled",
    "suppressed",
}


def recipients(count: int) -> list[dict]:
    """`count` recipients, each with their own name."""
    return [{"to": f"user{i}@example.com", "context": {"name": f"User {i}"}} for i in range(count)]


def post_batch(api, **overrides):
    """POST a batch of the welcome template and return the response."""
    body = {"template": "welcome", "recipients": recipients(3)}
    body.update(overrides)
    return api.post(BATCHES, body, format="json")


def test_create_batch_is_accepted_with_counts(api, welcome_template):
    """202 with the batch id, its count, every status count and a Location header."""
    response = post_batch(api, tags=["launch"])

    assert response.status_code == 202
    body = response.json()
    assert body["count"] == 3
    assert body["template"] == "welcome"
    assert body["tags"] == ["launch"]
    assert set(body["status_counts"]) == ALL_STATUSES
    assert body["status_counts"]["queued"] == 3
    assert response["Location"] == f"/api/v1/batches/{body['id']}/"
    assert EmailJob.objects.filter(batch_id=body["id"]).count() == 3


def test_batch_detail_shows_counts_per_status(api, welcome_template):
    """GET /batches/{id}/ answers count and status_counts with zeros for empty statuses."""
    batch_id = post_batch(api).json()["id"]

    response = api.get(f"{BATCHES}{batch_id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert body["status_counts"] == {status: 0 for status in ALL_STATUSES} | {"queued": 3}


def test_unknown_batch_is_404(api):
    """A batch id that does not exist is a 404."""
    response = api.get(f"{BATCHES}00000000-0000-0000-0000-000000000000/")

    assert response.status_code == 404


def test_recipient_context_overrides_the_shared_context(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """Each email renders with the shared context merged with its recipient's own context."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(
            api,
            context={"name": "friend"},
            recipients=[
                {"to": "ada@example.com", "context": {"name": "Ada"}, "metadata": {"id": 1}},
                {"to": "bob@example.com"},
            ],
        )
    assert response.status_code == 202

    run_worker()

    subjects = {msg.to[0]: msg.subject for msg in CapturedMessage.objects.all()}
    assert subjects == {"ada@example.com": "Welcome, Ada!", "bob@example.com": "Welcome, friend!"}
    metadata = {email.recipient: email.metadata for email in EmailJob.objects.all()}
    assert metadata == {"ada@example.com": {"id": 1}, "bob@example.com": {}}


def test_batch_of_250_is_one_drain_job_not_250_and_all_get_sent(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """250 recipients ask for one drain job; it takes them 100 at a time until all are sent."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(api, recipients=recipients(250))

    assert response.status_code == 202
    assert len(django_rq.get_queue("default")) == 1

    reports = [job.return_value() for job in _finished_jobs(run_worker())]

    # One drain takes the batch chunk after chunk; the drain a full chunk asked for (so that
    # another worker could help) finds nothing left.
    assert [report["claimed"] for report in reports] == [250, 0]

    counts = api.get(f"{BATCHES}{response.json()['id']}/").json()["status_counts"]
    assert counts["sent"] == 250
    assert counts["queued"] == 0
    assert CapturedMessage.objects.count() == 250


def test_chunk_size_follows_the_setting(
    api, welcome_template, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """MAILQUEUE_BATCH_CHUNK_SIZE decides how many emails one job claims."""
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = 2
    with django_capture_on_commit_callbacks(execute=True):
        post_batch(api, recipients=recipients(5))
    assert queue_lengths()["default"] == 1

    claims = []
    claim = delivery.emails_claim_queued

    def counting(**kwargs):
        claimed = claim(**kwargs)
        claims.append(len(claimed))
        return claimed

    monkeypatch.setattr(delivery, "emails_claim_queued", counting)
    run_worker()

    assert claims[:3] == [2, 2, 1]
    assert sum(claims) == 5


def _finished_jobs(worker):
    """The jobs a burst worker finished, oldest first."""
    registry = django_rq.get_queue("default").finished_job_registry
    jobs = [django_rq.get_queue("default").fetch_job(job_id) for job_id in registry.get_job_ids()]
    return sorted(jobs, key=lambda job: job.ended_at)


def test_scheduled_batch_is_released_in_chunk_jobs(
    api, welcome_template, settings, django_capture_on_commit_callbacks
):
    """A batch for later is held in the scheduler as chunk jobs of MAILQUEUE_BATCH_CHUNK_SIZE."""
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = 2
    send_at = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        post_batch(api, recipients=recipients(5), send_at=send_at.isoformat())

    assert get_scheduler().count() == 3


def test_high_priority_batch_uses_the_high_queue(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """The batch's priority picks the queue of all its jobs."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(api, priority="high")

    assert response.json()["priority"] == "high"
    assert queue_lengths() == {"high": 1, "default": 0, "low": 0}


def test_scheduled_batch_waits_in_the_scheduler(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """A future send_at makes every email `scheduled` and puts nothing on the queues yet."""
    send_at = timezone.now() + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(api, send_at=send_at.isoformat())

    assert response.status_code == 202
    assert response.json()["status_counts"]["scheduled"] == 3
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    assert get_scheduler().count() == 1


def test_batch_emails_are_listed_by_batch(api, welcome_template):
    """GET /emails/?batch=<id> lists exactly the batch's emails."""
    batch_id = post_batch(api).json()["id"]
    api.post("/api/v1/emails/", {"to": "x@example.com", "subject": "s", "text": "t"}, format="json")

    results = api.get(f"/api/v1/emails/?batch={batch_id}").json()["results"]

    assert sorted(item["to"][0] for item in results) == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
    ]
    assert {item["batch"] for item in results} == {batch_id}


def test_batch_limit_follows_the_setting(api, welcome_template, settings):
    """More recipients than MAILQUEUE_BATCH_MAX is a 400 on `recipients`; the limit itself is ok."""
    settings.MAILQUEUE_BATCH_MAX = 3

    assert post_batch(api, recipients=recipients(3)).status_code == 202
    response = post_batch(api, recipients=recipients(4))

    assert response.status_code == 400
    assert "3" in response.json()["recipients"][0]
    assert Batch.objects.count() == 1


def test_missing_variable_for_one_recipient_is_400_naming_it(api, welcome_template):
    """A recipient whose merged context lacks a required variable is named; nothing is stored."""
    response = post_batch(
        api,
        recipients=[
            {"to": "ada@example.com", "context": {"name": "Ada"}},
            {"to": "bob@example.com", "context": {"nickname": "Bob"}},
        ],
    )

    assert response.status_code == 400
    body = response.json()
    assert "recipients[1].context" in body
    assert "name" in body["recipients[1].context"][0]
    assert Batch.objects.count() == 0
    assert EmailJob.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"template": "nope"}, "template"),
        ({"template": None}, "template"),
        ({"recipients": []}, "recipients"),
        ({"recipients": "ada@example.com"}, "recipients"),
        ({"recipients": [{"to": "not-an-address", "context": {"name": "A"}}]}, "recipients"),
        ({"recipients": [{"to": "a@b.com, c@d.com", "context": {"name": "A"}}]}, "recipients"),
        ({"recipients": [{"to": [], "context": {"name": "A"}}]}, "recipients"),
        ({"recipients": [{"context": {"name": "A"}}]}, "recipients"),
        ({"recipients": [{"to": "a@b.com", "context": ["A"]}]}, "recipients"),
        ({"recipients": [{"to": "a@b.com", "name": "A"}]}, "recipients"),
        ({"context": "name=A"}, "context"),
        ({"priority": "urgent"}, "priority"),
        ({"send_at": "2030-01-01 10:00"}, "send_at"),
        ({"send_at": "soon"}, "send_at"),
        ({"from_email": "nobody"}, "from_email"),
        ({"tags": "launch"}, "tags"),
        ({"subject": "Hi"}, "subject"),
    ],
)
def test_bad_batch_input_is_400_naming_the_field(api, welcome_template, overrides, field):
    """Each malformed part of a batch is a 400 with that field as a key; nothing is stored."""
    response = post_batch(api, **overrides)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Batch.objects.count() == 0


def test_recipient_with_too_many_addresses_is_400(api, welcome_template, settings):
    """One recipient entry may not carry more than MAILQUEUE_MAX_RECIPIENTS addresses."""
    settings.MAILQUEUE_MAX_RECIPIENTS = 2

    response = post_batch(
        api,
        recipients=[{"to": ["a@x.com", "b@x.com", "c@x.com"], "context": {"name": "A"}}],
    )

    assert response.status_code == 400
    assert "recipients[0].to" in response.json()
    assert Batch.objects.count() == 0


@pytest.mark.parametrize("payload", ["[]", "null", '"welcome"'])
def test_batch_body_that_is_not_an_object_is_400(api, payload):
    """A body that is not a JSON object is a 400, never a 500."""
    response = api.post(BATCHES, payload, content_type="application/json")

    assert response.status_code == 400


def test_get_on_batches_collection_is_405(api):
    """Batches are created and read one by one; listing them is not offered."""
    assert api.get(BATCHES).status_code == 405
