"""POST/GET /api/v1/emails/, email detail, retry and cancel: the contract callers rely on."""

import base64
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from mailqueue.api.serializers import EmailCreateInputSerializer
from mailqueue.models import EmailAttachment, EmailJob, EmailStatus
from mailqueue.scheduling import get_scheduler
from mailqueue.services import emails_sweep
from tests.helpers import DOWN_REDIS, queue_lengths, run_worker, sender_domains_verify

EMAILS = "/api/v1/emails/"

DETAIL_FIELDS = {
    "id",
    "status",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "from_email",
    "subject",
    "template",
    "priority",
    "attempts",
    "max_attempts",
    "last_error",
    "send_at",
    "sent_at",
    "provider",
    "message_id",
    "batch",
    "tags",
    "metadata",
    "events",
    "delivery_attempts",
    "created_at",
    "updated_at",
}


def raw_email(**overrides) -> dict:
    """A valid raw-content email body, with overrides."""
    body = {"to": "ada@example.com", "subject": "Hello", "text": "Hi Ada", "html": "<p>Hi</p>"}
    body.update(overrides)
    return body


def post_email(api, **overrides):
    """POST an email and return the response."""
    return api.post(EMAILS, raw_email(**overrides), format="json")


def set_status(email_id: str, status: str) -> None:
    """Test setup: put an email into a status the API cannot reach on its own."""
    EmailJob.objects.filter(pk=email_id).update(status=status)


# --- Accepting an email ----------------------------------------------------------------------


def test_create_raw_email_is_accepted_queued_with_location(api):
    """A raw email answers 202 with its id, `queued` status and a Location to its detail."""
    response = post_email(api, tags=["welcome"], metadata={"user_id": 7})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["priority"] == "default"
    assert body["send_at"] is None
    assert body["to"] == ["ada@example.com"]
    assert body["tags"] == ["welcome"]
    assert body["metadata"] == {"user_id": 7}
    assert body["created_at"]
    assert response["Location"] == f"/api/v1/emails/{body['id']}/"
    assert EmailJob.objects.filter(pk=body["id"], status=EmailStatus.QUEUED).exists()


def test_location_header_leads_to_the_email(api):
    """Following the Location header returns the email just accepted."""
    response = post_email(api)

    detail = api.get(response["Location"])

    assert detail.status_code == 200
    assert detail.json()["id"] == response.json()["id"]


def test_accepted_email_is_enqueued_after_commit(api, django_capture_on_commit_callbacks):
    """Once the request's transaction commits, exactly one job waits on the default queue."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post_email(api)

    assert response.status_code == 202
    assert queue_lengths() == {"high": 0, "default": 1, "low": 0}


def test_high_priority_email_goes_to_the_high_queue(api, django_capture_on_commit_callbacks):
    """`priority: high` is echoed and the job lands on the `high` queue."""
    with django_capture_on_commit_callbacks(execute=True):
        response = post_email(api, priority="high")

    assert response.json()["priority"] == "high"
    assert queue_lengths() == {"high": 1, "default": 0, "low": 0}


def test_single_address_and_list_are_both_accepted(api, issued_key):
    """`to` may be one address or a list; cc, bcc and reply_to are stored as lists."""
    sender_domains_verify(issued_key.api_key.client, "acme.example", "example.com")
    response = post_email(
        api,
        to=["ada@example.com", "Bob Smith <bob@example.com>"],
        cc="carol@example.com",
        bcc=["dave@example.com"],
        reply_to="support@example.com",
        from_email="Acme <noreply@acme.example>",
    )

    assert response.status_code == 202
    body = response.json()
    assert body["to"] == ["ada@example.com", "Bob Smith <bob@example.com>"]
    assert body["cc"] == ["carol@example.com"]
    assert body["bcc"] == ["dave@example.com"]
    assert body["reply_to"] == ["support@example.com"]
    assert body["from_email"] == "Acme <noreply@acme.example>"


def test_template_email_is_accepted(api, welcome_template):
    """A template send names the template and needs no subject or body."""
    response = api.post(
        EMAILS,
        {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        format="json",
    )

    assert response.status_code == 202
    assert response.json()["template"] == "welcome"


def test_future_send_at_is_scheduled_not_queued(api, django_capture_on_commit_callbacks):
    """A future send_at gives status `scheduled`; the job waits in the scheduler, not a queue."""
    send_at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_email(api, send_at=send_at.isoformat())

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["send_at"]) == send_at
    assert queue_lengths() == {"high": 0, "default": 0, "low": 0}
    assert get_scheduler().count() == 1


def test_send_at_with_offset_keeps_the_instant(api):
    """`+02:00` is honoured: the stored instant is the same moment in UTC."""
    response = post_email(api, send_at="2999-12-01T09:30:00+02:00")

    assert response.status_code == 202
    stored = EmailJob.objects.get(pk=response.json()["id"]).send_at
    assert stored == datetime(2999, 12, 1, 7, 30, tzinfo=UTC)


def test_past_send_at_is_queued(api):
    """A send_at in the past means send now."""
    response = post_email(api, send_at="2020-01-01T00:00:00Z")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_allowed_headers_are_stored(api):
    """X- headers and allow-listed headers such as List-Unsubscribe are accepted."""
    headers = {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsub@acme.example>"}

    response = post_email(api, headers=headers)

    assert response.status_code == 202
    assert EmailJob.objects.get(pk=response.json()["id"]).headers == headers


@pytest.mark.parametrize("name", ["Subject", "From", "Message-ID", "Foo-Bar", "bcc", "X-Ä"])
def test_reserved_or_unknown_headers_are_refused(api, name):
    """Headers Mailqueue owns, or that are not allow-listed, are a 400 on `headers`."""
    response = post_email(api, headers={name: "value"})

    assert response.status_code == 400
    assert "headers" in response.json()
    assert EmailJob.objects.count() == 0


def test_attachment_is_decoded_and_stored(api):
    """Base64 content is stored decoded; the MIME type is guessed from the file name."""
    content = b"%PDF-1.4 invoice"
    response = post_email(
        api,
        attachments=[
            {"filename": "invoice.pdf", "content": base64.b64encode(content).decode()},
            {"filename": "data.bin", "content": "AAE=", "mimetype": "application/x-custom"},
        ],
    )

    assert response.status_code == 202
    stored = {
        item.filename: item
        for item in EmailAttachment.objects.filter(email_id=response.json()["id"])
    }
    assert bytes(stored["invoice.pdf"].content) == content
    assert stored["invoice.pdf"].mimetype == "application/pdf"
    assert bytes(stored["data.bin"].content) == b"\x00\x01"
    assert stored["data.bin"].mimetype == "application/x-custom"


def test_email_is_delivered_and_detail_shows_the_outcome(api, django_capture_on_commit_callbacks):
    """After a worker runs, the detail shows sent, provider, message id, events and attempts."""
    with django_capture_on_commit_callbacks(execute=True):
        email_id = post_email(api).json()["id"]

    run_worker()

    body = api.get(f"{EMAILS}{email_id}/").json()
    assert body["status"] == "sent"
    assert body["provider"] == "capture"
    assert body["message_id"]
    assert body["sent_at"]
    assert body["attempts"] == 1
    assert [event["type"] for event in body["events"]] == ["sent"]
    assert [attempt["outcome"] for attempt in body["delivery_attempts"]] == ["sent"]


def test_redis_down_still_accepts_and_sweeper_delivers_later(
    api, settings, django_capture_on_commit_callbacks
):
    """With Redis unreachable the email is still 202 and queued; the sweeper enqueues it later."""
    working_queues = settings.RQ_QUEUES
    settings.RQ_QUEUES = DOWN_REDIS
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post_email(api)

    assert response.status_code == 202
    assert len(callbacks) == 1
    email_id = response.json()["id"]
    assert EmailJob.objects.get(pk=email_id).status == EmailStatus.QUEUED

    settings.RQ_QUEUES = working_queues
    settings.MAILQUEUE_SWEEP_GRACE_SECONDS = 0
    assert queue_lengths()["default"] == 0
    assert emails_sweep().drains == 1
    run_worker()
    assert EmailJob.objects.get(pk=email_id).status == EmailStatus.SENT


# --- Refusing bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"to": "not-an-address"}, "to"),
        ({"to": ["a@b.com, c@d.com"]}, "to"),
        ({"to": "a@b.com\r\nBcc: victim@example.com"}, "to"),
        ({"to": "ada@example.com\n"}, "to"),
        ({"to": []}, "to"),
        ({"to": 123}, "to"),
        ({"to": {"address": "a@b.com"}}, "to"),
        ({"cc": ["ok@example.com", "broken@"]}, "cc"),
        ({"bcc": "nope"}, "bcc"),
        ({"reply_to": "a@b.com, c@d.com"}, "reply_to"),
        ({"from_email": "not an address"}, "from_email"),
        ({"from_email": ["a@b.com"]}, "from_email"),
        ({"subject": "Hello\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"subject": ""}, "subject"),
        ({"html": "", "text": ""}, "html"),
        ({"context": {"name": "Ada"}}, "context"),
        ({"priority": "urgent"}, "priority"),
        ({"send_at": "2030-01-01T10:00:00"}, "send_at"),
        ({"send_at": "tomorrow"}, "send_at"),
        ({"send_at": "2030-13-45T10:00:00Z"}, "send_at"),
        ({"send_at": 1893456000}, "send_at"),
        ({"tags": "welcome"}, "tags"),
        ({"tags": ["a\nb"]}, "tags"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"headers": ["X-Campaign"]}, "headers"),
        ({"headers": {"X-Campaign": "a\r\nBcc: victim@example.com"}}, "headers"),
        ({"headers": {"X-Campaign": 5}}, "headers"),
        ({"attachments": [{"filename": "a.txt", "content": "not base64!"}]}, "attachments"),
        ({"attachments": [{"filename": "a.txt"}]}, "attachments"),
        ({"attachments": "a.txt"}, "attachments"),
        ({"attachments": [{"filename": "a\r\n.txt", "content": "AA=="}]}, "attachments"),
        ({"attachments": [{"filename": "a", "content": "AA==", "mimetype": "pdf"}]}, "attachments"),
        ({"tempalte": "welcome"}, "tempalte"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, overrides, field):
    """Each malformed field is a 400 whose JSON body has that field as a key; nothing is stored."""
    response = post_email(api, **overrides)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert EmailJob.objects.count() == 0


def test_header_injection_in_address_is_refused(api):
    """CR/LF in an address is refused, so a caller cannot smuggle in extra recipients."""
    response = post_email(api, to=["ada@example.com", "x@example.com\r\nBcc: evil@example.com"])

    assert response.status_code == 400
    assert "to[1]" in response.json()["to"][0]


def test_comma_separated_addresses_in_one_item_are_refused(api):
    """Two addresses in one list item are refused with a hint to use one per item."""
    response = post_email(api, to="a@b.com, c@d.com")

    assert response.status_code == 400
    assert "one address per list item" in response.json()["to"][0]


def test_unknown_template_is_400(api):
    """A template slug that does not exist is a 400 on `template`."""
    response = api.post(EMAILS, {"to": "ada@example.com", "template": "nope"}, format="json")

    assert response.status_code == 400
    assert "nope" in response.json()["template"][0]


def test_inactive_template_is_400(api, welcome_template):
    """A deactivated template cannot be sent."""
    welcome_template.is_active = False
    welcome_template.save()

    response = api.post(
        EMAILS,
        {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        format="json",
    )

    assert response.status_code == 400
    assert "template" in response.json()


def test_missing_template_variable_is_400_naming_it(api, welcome_template):
    """A context lacking a required variable is a 400 that names the variable."""
    response = api.post(
        EMAILS, {"to": "ada@example.com", "template": "welcome", "context": {}}, format="json"
    )

    assert response.status_code == 400
    assert "name" in response.json()["context"][0]
    assert EmailJob.objects.count() == 0


def test_template_and_subject_together_are_400(api, welcome_template):
    """Template and raw content are exclusive."""
    response = api.post(
        EMAILS,
        {
            "to": "ada@example.com",
            "template": "welcome",
            "context": {"name": "Ada"},
            "subject": "Hi",
        },
        format="json",
    )

    assert response.status_code == 400
    assert "subject" in response.json()


def test_neither_template_nor_subject_is_400(api):
    """An email with no template and no content is refused."""
    response = api.post(EMAILS, {"to": "ada@example.com"}, format="json")

    assert response.status_code == 400
    assert {"subject", "html"} <= set(response.json())


def test_missing_to_is_400(api):
    """`to` is required."""
    response = api.post(EMAILS, {"subject": "Hi", "text": "Hello"}, format="json")

    assert response.status_code == 400
    assert "to" in response.json()


def test_fifty_recipients_are_fine_but_fifty_one_are_not(api):
    """At most MAILQUEUE_MAX_RECIPIENTS (50) addresses across to, cc and bcc."""
    addresses = [f"user{i}@example.com" for i in range(51)]

    accepted = post_email(api, to=addresses[:30], cc=addresses[30:40], bcc=addresses[40:50])
    refused = post_email(api, to=addresses[:30], cc=addresses[30:40], bcc=addresses[40:51])

    assert accepted.status_code == 202
    assert refused.status_code == 400
    assert "51" in refused.json()["to"][0]


def test_recipient_limit_follows_the_setting(api, settings):
    """MAILQUEUE_MAX_RECIPIENTS is read per request."""
    settings.MAILQUEUE_MAX_RECIPIENTS = 2

    response = post_email(api, to=["a@example.com", "b@example.com"], cc="c@example.com")

    assert response.status_code == 400
    assert "to" in response.json()


def test_oversized_body_is_413(api, settings):
    """A body over MAILQUEUE_MAX_BODY_BYTES is refused with 413 before anything is stored."""
    settings.MAILQUEUE_MAX_BODY_BYTES = 1000

    response = post_email(api, text="x" * 2000)

    assert response.status_code == 413
    assert "1000" in response.json()["detail"]
    assert EmailJob.objects.count() == 0


def test_body_just_under_the_limit_is_accepted(api, settings):
    """The limit is on size, not on content: a small body under a small limit passes."""
    settings.MAILQUEUE_MAX_BODY_BYTES = 1000

    assert post_email(api, text="x" * 500).status_code == 202


def test_non_json_body_is_415(api):
    """Only JSON is accepted."""
    response = api.post(EMAILS, "to=ada@example.com", content_type="text/plain")

    assert response.status_code == 415


def test_malformed_json_is_400(api):
    """Broken JSON is a 400 that says so."""
    response = api.post(EMAILS, '{"to": ', content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


@pytest.mark.parametrize("payload", ["[1, 2]", '"ada@example.com"', "null", "42"])
def test_json_that_is_not_an_object_is_400(api, payload):
    """A JSON array, string, number or null body is a 400, never a 500."""
    response = api.post(EMAILS, payload, content_type="application/json")

    assert response.status_code == 400
    assert EmailJob.objects.count() == 0


def test_overlong_display_name_is_400_not_a_server_error(api):
    """An address whose display name makes it too long for storage is bad input, not a 5xx."""
    response = post_email(api, from_email=f"{'A' * 400} <ada@example.com>")

    assert response.status_code == 400
    assert "from_email" in response.json()


# --- Reading one email ----------------------------------------------------------------------


def test_detail_has_every_documented_field(api):
    """GET /emails/{id}/ returns the whole documented key set."""
    email_id = post_email(api, to="Ada <ada@example.com>").json()["id"]

    response = api.get(f"{EMAILS}{email_id}/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= DETAIL_FIELDS
    assert body["to"] == ["Ada <ada@example.com>"]
    assert body["subject"] == "Hello"
    assert body["attempts"] == 0
    assert body["max_attempts"] == 5
    assert body["events"] == []
    assert body["delivery_attempts"] == []


def test_unknown_email_is_404_json(api):
    """An id that does not exist is a JSON 404."""
    response = api.get(f"{EMAILS}00000000-0000-0000-0000-000000000000/")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_malformed_email_id_is_404_json(api):
    """A path that is not a UUID is a JSON 404 under /api/."""
    response = api.get(f"{EMAILS}not-a-uuid/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# --- Listing emails --------------------------------------------------------------------------


def _send_many(api, count: int, **overrides) -> list[str]:
    return [post_email(api, **overrides).json()["id"] for _ in range(count)]


def test_list_is_cursor_paginated_with_default_page_size_50(api):
    """Default pages hold 50 emails, newest first, with `next` and `previous` links."""
    ids = _send_many(api, 52)

    first = api.get(EMAILS).json()

    assert set(first) >= {"results", "next", "previous"}
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"]
    assert [item["id"] for item in first["results"]] == ids[::-1][:50]
    second = api.get(first["next"]).json()
    assert [item["id"] for item in second["results"]] == ids[::-1][50:]
    assert second["next"] is None
    assert second["previous"]


def test_walking_next_links_returns_every_email_once(api):
    """Following `next` with a small page size visits each email exactly once."""
    ids = _send_many(api, 23)

    seen = []
    url = f"{EMAILS}?page_size=5"
    while url:
        page = api.get(url).json()
        seen.extend(item["id"] for item in page["results"])
        url = page["next"]

    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == set(ids)


def test_emails_created_during_a_walk_do_not_shift_pages(api):
    """New emails arriving mid-walk neither repeat nor skip older ones (cursor, not offset)."""
    ids = _send_many(api, 10)

    first = api.get(f"{EMAILS}?page_size=4").json()
    _send_many(api, 3)
    seen = [item["id"] for item in first["results"]]
    url = first["next"]
    while url:
        page = api.get(url).json()
        seen.extend(item["id"] for item in page["results"])
        url = page["next"]

    assert seen == ids[::-1]


def test_page_size_is_limited_to_500(api):
    """page_size above 500 (or below 1) is a 400 on `page_size`."""
    assert api.get(f"{EMAILS}?page_size=500").status_code == 200
    for bad in ("501", "0", "ten"):
        response = api.get(f"{EMAILS}?page_size={bad}")
        assert response.status_code == 400
        assert "page_size" in response.json()


def test_list_filters(api, welcome_template):
    """status, to, tag, batch and created_after/before narrow the list."""
    first = post_email(api, to="First <First@Example.com>", tags=["signup"]).json()["id"]
    second = post_email(api, to=["other@example.com", "second@example.com"]).json()["id"]
    cancelled = post_email(api, tags=["signup", "promo"]).json()["id"]
    api.post(f"{EMAILS}{cancelled}/cancel/")
    batch = api.post(
        "/api/v1/batches/",
        {"template": "welcome", "recipients": [{"to": "b@example.com", "context": {"name": "B"}}]},
        format="json",
    ).json()["id"]

    def ids(query: str) -> set[str]:
        response = api.get(f"{EMAILS}?{query}")
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["results"]}

    assert ids("status=cancelled") == {cancelled}
    assert ids("to=first@example.com") == {first}
    assert ids("to=second@example.com") == {second}
    assert ids("tag=signup") == {first, cancelled}
    assert ids("tag=promo&status=cancelled") == {cancelled}
    batch_emails = {
        str(pk) for pk in EmailJob.objects.filter(batch_id=batch).values_list("pk", flat=True)
    }
    assert len(batch_emails) == 1
    assert ids(f"batch={batch}") == batch_emails
    created = EmailJob.objects.get(pk=second).created_at
    after = created.isoformat().replace("+00:00", "Z")
    assert second in ids(f"created_after={after}")
    assert first not in ids(f"created_after={after}")
    assert ids(f"created_before={after}") == {first}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=lost", "status"),
        ("batch=not-a-uuid", "batch"),
        ("created_after=2024-01-01T00:00:00", "created_after"),
        ("created_before=yesterday", "created_before"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_list_filters_are_400(api, query, field):
    """Invalid filter values and unknown parameters are a 400 naming the parameter."""
    response = api.get(f"{EMAILS}?{query}")

    assert response.status_code == 400
    assert field in response.json()


def test_bad_cursor_is_400_naming_the_cursor(api):
    """A tampered cursor is bad input: 400 naming `cursor`."""
    response = api.get(f"{EMAILS}?cursor=garbage")

    assert response.status_code == 400
    assert "cursor" in response.json()


# --- Cancel and retry ------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["queued", "scheduled", "retrying"])
def test_cancel_waiting_email(api, status):
    """Scheduled, queued and retrying emails can be cancelled."""
    email_id = post_email(api).json()["id"]
    set_status(email_id, status)

    response = api.post(f"{EMAILS}{email_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "cancelled" in [event["type"] for event in response.json()["events"]]
    assert EmailJob.objects.get(pk=email_id).status == EmailStatus.CANCELLED


@pytest.mark.parametrize("status", ["sending", "sent", "failed", "cancelled"])
def test_cancel_is_409_once_sending_or_done(api, status):
    """Sending, sent, failed or already cancelled emails cannot be cancelled: 409."""
    email_id = post_email(api).json()["id"]
    set_status(email_id, status)

    response = api.post(f"{EMAILS}{email_id}/cancel/")

    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert EmailJob.objects.get(pk=email_id).status == status


def test_cancelled_email_is_never_sent(api, django_capture_on_commit_callbacks):
    """Cancelling a queued email before a worker reaches it means it is not delivered."""
    with django_capture_on_commit_callbacks(execute=True):
        email_id = post_email(api).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"{EMAILS}{email_id}/cancel/")

    run_worker()

    assert EmailJob.objects.get(pk=email_id).status == EmailStatus.CANCELLED


def test_cancel_scheduled_email_removes_its_scheduled_job(api, django_capture_on_commit_callbacks):
    """A cancelled scheduled email leaves nothing in the scheduler."""
    with django_capture_on_commit_callbacks(execute=True):
        email_id = post_email(api, send_at="2999-01-01T00:00:00Z").json()["id"]
    assert get_scheduler().count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{EMAILS}{email_id}/cancel/")

    assert response.status_code == 200
    assert get_scheduler().count() == 0


def test_retry_failed_email_queues_it_again(api, django_capture_on_commit_callbacks):
    """A failed email is queued again (202) with attempts and last error reset, and sent."""
    email_id = post_email(api).json()["id"]
    EmailJob.objects.filter(pk=email_id).update(
        status=EmailStatus.FAILED, attempts=5, last_error="550 mailbox full"
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{EMAILS}{email_id}/retry/")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["attempts"] == 0
    assert body["last_error"] == ""
    assert queue_lengths()["default"] == 1
    run_worker()
    assert EmailJob.objects.get(pk=email_id).status == EmailStatus.SENT


def test_retry_cancelled_scheduled_email_sends_now(api):
    """Retrying a cancelled scheduled email drops its send_at: it is queued for now."""
    email_id = post_email(api, send_at="2999-01-01T00:00:00Z").json()["id"]
    api.post(f"{EMAILS}{email_id}/cancel/")

    response = api.post(f"{EMAILS}{email_id}/retry/")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["send_at"] is None


@pytest.mark.parametrize("status", ["sent", "queued", "scheduled", "sending", "retrying"])
def test_retry_is_409_unless_failed_or_cancelled(api, status):
    """Only failed or cancelled emails can be retried; a sent email is a 409."""
    email_id = post_email(api).json()["id"]
    set_status(email_id, status)

    response = api.post(f"{EMAILS}{email_id}/retry/")

    assert response.status_code == 409
    assert EmailJob.objects.get(pk=email_id).status == status


def test_retry_and_cancel_of_unknown_email_are_404(api):
    """Acting on an id that does not exist is a 404."""
    missing = "00000000-0000-0000-0000-000000000000"

    assert api.post(f"{EMAILS}{missing}/retry/").status_code == 404
    assert api.post(f"{EMAILS}{missing}/cancel/").status_code == 404


def test_methods_not_offered_are_405(api):
    """DELETE on an email and GET on an action are 405, not 500."""
    email_id = post_email(api).json()["id"]

    assert api.delete(f"{EMAILS}{email_id}/").status_code == 405
    assert api.get(f"{EMAILS}{email_id}/retry/").status_code == 405


# --- Input PostgreSQL or a header could never hold ----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"to": "ada@example.com", "subject": "Hi", "text": "a\\u0000b"}', "text"),
        (
            '{"to": "ada@example.com", "subject": "Hi", "text": "x", "metadata": {"k": "\\u0000"}}',
            "metadata",
        ),
        ('{"to": "\\ud800@example.com", "subject": "Hi", "text": "x"}', "to"),
        (
            '{"to": "ada@example.com", "subject": "Hi", "text": "x", "headers": {"X": "\\udfff"}}',
            "headers",
        ),
    ],
)
def test_nul_and_lone_surrogates_are_400_naming_the_field(api, raw, field):
    """Strings PostgreSQL cannot store are refused up front, never a 500 or a fake 503."""
    response = api.post(EMAILS, raw, content_type="application/json")

    assert response.status_code == 400
    assert field in response.json()
    assert not EmailJob.objects.exists()


def test_deeply_nested_json_is_400(api):
    """A body nested thousands of levels deep is a parse error, not a RecursionError (500)."""
    raw = (
        '{"to": "ada@example.com", "subject": "Hi", "text": "x", "metadata": '
        + "[" * 5000
        + "]" * 5000
        + "}"
    )

    response = api.post(EMAILS, raw, content_type="application/json")

    assert response.status_code == 400


def test_head_needs_the_same_scope_as_get(db, api_for):
    """A send-only key cannot probe the email list with HEAD."""
    sender = api_for("sender-only", ["send"])

    assert sender.head(EMAILS).status_code == 403


def test_subject_rendering_longer_than_a_header_allows_is_400(api):
    """A context that makes the subject longer than a header line is refused when accepted."""
    api.post(
        "/api/v1/templates/",
        {"slug": "long", "name": "Long", "subject": "{{ s }}", "text": "x"},
        format="json",
    )
    response = api.post(
        EMAILS,
        {"to": "ada@example.com", "template": "long", "context": {"s": "y" * 999}},
        format="json",
    )

    assert response.status_code == 400
    assert "subject" in response.json()["context"][0]
    assert not EmailJob.objects.exists()


def test_template_email_shows_its_rendered_subject_at_once(api, welcome_template):
    """GET right after POST shows the subject as it will be sent, before any worker ran."""
    email_id = api.post(
        EMAILS,
        {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        format="json",
    ).json()["id"]

    assert api.get(f"{EMAILS}{email_id}/").json()["subject"] == "Welcome, Ada!"


def test_stalled_redis_does_not_hang_the_request(
    api, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """Redis accepts connections but never answers: the email is still accepted, quickly."""
    import socket
    import time

    import mailqueue.scheduling as scheduling

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel completes connections; nobody ever reads or answers
    port = listener.getsockname()[1]
    monkeypatch.setattr(scheduling, "COMMAND_TIMEOUT_SECONDS", 0.5)
    settings.RQ_QUEUES = {
        name: {**config, "URL": f"redis://127.0.0.1:{port}/0"}
        for name, config in settings.RQ_QUEUES.items()
    }
    try:
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(
                EMAILS, {"to": "ada@example.com", "subject": "Hi", "text": "x"}, format="json"
            )
        elapsed = time.monotonic() - started
    finally:
        listener.close()

    assert response.status_code == 202
    assert EmailJob.objects.get().status == EmailStatus.QUEUED  # the sweeper enqueues it later
    assert elapsed < 5


# --- What accepting an email costs -------------------------------------------------------------


def test_an_email_with_attachments_is_stored_in_one_transaction(api, django_assert_num_queries):
    """The email and its attachments are written together (or not at all)."""
    post_email(api)
    attachment = {"filename": "a.txt", "content": base64.b64encode(b"hi").decode()}

    with django_assert_num_queries(5):  # key, SAVEPOINT, INSERT email, INSERT file, RELEASE
        response = post_email(api, attachments=[attachment])

    assert response.status_code == 202
    assert EmailAttachment.objects.get(email_id=response.json()["id"]).filename == "a.txt"


def test_accepting_a_raw_email_is_two_queries(api, django_assert_num_queries):
    """The key lookup and the INSERT (which commits on its own), and nothing else."""
    post_email(api)  # the key's first use records last_used_at

    with django_assert_num_queries(2):
        response = post_email(api)

    assert response.status_code == 202


def test_accepting_a_template_email_is_three_queries(
    api, welcome_template, django_assert_num_queries
):
    """One more query than a raw email: the active template together with its current version."""
    body = {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}}
    api.post(EMAILS, body, format="json")

    with django_assert_num_queries(3):
        response = api.post(EMAILS, body, format="json")

    assert response.status_code == 202
    assert response.json()["subject"] == "Welcome, Ada!"


def test_accepted_answer_is_the_email_as_listed(api, welcome_template):
    """The 202 body has the same fields and values as the email's entry in the list."""
    accepted = api.post(
        EMAILS,
        {
            "to": ["ada@example.com", "Bob <bob@example.com>"],
            "template": "welcome",
            "context": {"name": "Ada"},
            "tags": ["welcome"],
            "metadata": {"user": 7},
            "priority": "high",
        },
        format="json",
    ).json()

    [listed] = api.get(EMAILS).json()["results"]

    assert accepted == listed


def test_concurrent_validations_do_not_mix_up_their_inputs():
    """Requests validated at the same time in several threads each get their own answer."""
    good = raw_email(to="Ada <ada@example.com>", tags=["a"])
    bad = raw_email(to="not an address", priority="urgent")
    failures = []

    def validate(body: dict, expect_valid: bool) -> None:
        for _ in range(200):
            serializer = EmailCreateInputSerializer(data=body)
            valid = serializer.is_valid()
            if valid != expect_valid:
                failures.append(serializer.errors)
            elif valid and serializer.validated_data["to"] != ["Ada <ada@example.com>"]:
                failures.append(serializer.validated_data)
            elif not valid and set(serializer.errors) != {"to", "priority"}:
                failures.append(serializer.errors)

    threads = [
        threading.Thread(target=validate, args=(body, body is good))
        for body in (good, bad, good, bad)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
