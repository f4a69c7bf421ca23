"""Where ESP events show: the API's email detail and `event` filter, the admin's event log, and
an email sent through Postmark by the worker that the webhook links by our metadata."""

import json

import pytest
import responses
from django.urls import reverse

from mailqueue.models import EmailStatus
from mailqueue.services import email_create
from tests.helpers import run_worker
from tests.tracking.esp_payloads import BASIC_AUTH, WEBHOOK_SECRET, payload, post_json, sent_email
from tracking.models import TrackingEvent

POSTMARK = "/webhooks/postmark/tracking/"
POSTMARK_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


@pytest.fixture
def webhook_auth(settings):
    """Basic auth required on every ESP webhook."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}


@pytest.fixture
def bounced_email(issued_key, webhook_auth):
    """An email Postmark reported delivered then hard-bounced, and an email with no events."""
    client = issued_key.api_key.client
    email = sent_email(client, message_id=POSTMARK_ID, provider="postmark")
    quiet = sent_email(client, to="bob@example.com", message_id="other")
    for name in ("postmark_delivery.json", "postmark_bounce_hard.json"):
        body = payload(name, EMAIL_ID=str(email.pk))
        assert post_json(POSTMARK, body, HTTP_AUTHORIZATION=BASIC_AUTH).status_code == 200
    return email, quiet


@pytest.mark.django_db
def test_email_detail_shows_fate_and_esp_events(api, bounced_email):
    """GET /api/v1/emails/{id}/: first delivery and bounce times, the ESP's events in order."""
    email, _quiet = bounced_email

    body = api.get(f"/api/v1/emails/{email.pk}/").json()

    assert body["delivered_at"] == "2026-03-01T16:33:54.907025Z"
    assert body["bounced_at"] == "2026-03-01T16:34:10.123456Z"
    assert body["opened_at"] is None
    assert body["clicked_at"] is None
    assert body["complained_at"] is None
    esp_events = [event for event in body["events"] if event["esp"]]
    assert [event["type"] for event in esp_events] == ["delivered", "bounced"]
    bounce = esp_events[1]
    assert bounce["esp"] == "postmark"
    assert bounce["message_id"] == POSTMARK_ID
    assert bounce["reject_reason"] == "bounced"
    assert bounce["recipient"] == "Ada@Example.com"
    assert bounce["mta_response"].startswith("smtp;550 5.1.1")


@pytest.mark.django_db
def test_email_list_filters_by_event(api, bounced_email):
    """`?event=bounced`: only emails with such an event; an unknown type is a 400 naming it."""
    email, quiet = bounced_email

    bounced = api.get("/api/v1/emails/", {"event": "bounced"}).json()["results"]
    everything = api.get("/api/v1/emails/").json()["results"]
    bad = api.get("/api/v1/emails/", {"event": "exploded"})

    assert [item["id"] for item in bounced] == [str(email.pk)]
    assert {item["id"] for item in everything} == {str(email.pk), str(quiet.pk)}
    assert bad.status_code == 400
    assert "event" in bad.json()


@pytest.mark.django_db
def test_another_clients_email_is_not_found_through_the_event_filter(api_for, bounced_email):
    """The filter stays scoped to the calling client."""
    other = api_for("globex", ["read"])

    assert other.get("/api/v1/emails/", {"event": "bounced"}).json()["results"] == []


@pytest.mark.django_db
def test_admin_lists_unlinked_events_and_shows_the_payload(admin_client, webhook_auth):
    """An ESP event for a message we do not know is in the admin's log, with its payload."""
    body = payload("postmark_click.json", EMAIL_ID="unknown")
    post_json(POSTMARK, body, HTTP_AUTHORIZATION=BASIC_AUTH)
    event = TrackingEvent.objects.get()

    listing = admin_client.get(reverse("admin:tracking_trackingevent_changelist"))
    detail = admin_client.get(reverse("admin:tracking_trackingevent_change", args=[event.pk]))

    assert listing.status_code == 200
    assert "unlinked" in listing.content.decode()
    assert detail.status_code == 200
    assert "https://example.com/welcome" in detail.content.decode()
    assert "ClickLocation" in detail.content.decode()


@pytest.mark.django_db
def test_email_sent_through_postmark_is_linked_by_our_metadata(
    issued_key, settings, webhook_auth, django_capture_on_commit_callbacks
):
    """The worker sends `mailqueue_email_id` with the message; Postmark echoes it back in its
    webhook, which links the event even when the message id it names is not the stored one."""
    settings.EMAIL_PROVIDERS = ["postmark"]
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "WEBHOOK_SECRET": WEBHOOK_SECRET}
    with django_capture_on_commit_callbacks(execute=True):
        email = email_create(
            client=issued_key.api_key.client, to=["ada@example.com"], subject="Hi", text="Hello"
        )
    with responses.RequestsMock() as postmark:
        postmark.post(
            "https://api.postmarkapp.com/email",
            json={
                "To": "ada@example.com",
                "SubmittedAt": "2026-03-01T16:33:50Z",
                "MessageID": "pm-stored-id",
                "ErrorCode": 0,
                "Message": "OK",
            },
        )
        with django_capture_on_commit_callbacks(execute=True):
            run_worker()
        sent_metadata = json.loads(postmark.calls[0].request.body)["Metadata"]
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    # Postmark's webhook carries the message's Metadata back as it was sent.
    body = json.loads(payload("postmark_delivery.json"))
    body["Metadata"] = sent_metadata

    response = post_json(POSTMARK, json.dumps(body), HTTP_AUTHORIZATION=BASIC_AUTH)

    assert response.status_code == 200
    assert TrackingEvent.objects.get(esp="postmark").email_id == email.pk
    email.refresh_from_db()
    assert email.delivered_at is not None
