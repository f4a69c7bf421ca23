"""ESP webhooks from HTTP POST to stored events, the emails' fate and the suppression list:
Postmark, Mailgun (signed), SendGrid (signed batches) and Resend (svix-signed)."""

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime

import pytest
from anymail.signals import AnymailTrackingEvent
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from svix.webhooks import Webhook as SvixWebhook

from client_webhooks.models import WebhookDelivery
from client_webhooks.selectors import webhook_subscriptions, webhook_subscriptions_forget
from client_webhooks.services import webhook_endpoint_create
from config.settings import anymail_env_value
from mailqueue.models import Suppression, SuppressionReason
from tests.tracking.esp_payloads import BASIC_AUTH, WEBHOOK_SECRET, payload, post_json, sent_email
from tracking.esp_events import esp_events_record
from tracking.models import TrackingEvent

POSTMARK = "/webhooks/postmark/tracking/"
MAILGUN = "/webhooks/mailgun/tracking/"
SENDGRID = "/webhooks/sendgrid/tracking/"
RESEND = "/webhooks/resend/tracking/"
POSTMARK_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
MAILGUN_KEY = "mailgun-signing-key-for-tests"
RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-secret-for-tests-32-bytes").decode()


@pytest.fixture
def client_acme(issued_key):
    """The API client `acme` whose emails the webhooks report on."""
    return issued_key.api_key.client


@pytest.fixture
def webhook_auth(settings):
    """Basic auth required on every ESP webhook (anymail's WEBHOOK_SECRET)."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
    return settings.ANYMAIL


def postmark_post(name: str, email, **headers):
    """POST a Postmark fixture naming `email` with our basic auth."""
    headers.setdefault("HTTP_AUTHORIZATION", BASIC_AUTH)
    return post_json(POSTMARK, payload(name, EMAIL_ID=str(email.pk)), **headers)


# --- Postmark -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_postmark_events_are_stored_linked_and_set_the_emails_fate(client_acme, webhook_auth):
    """Delivery, open and click: each stored once with its details, the email's times set."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    for name in ("postmark_delivery.json", "postmark_open.json", "postmark_click.json"):
        assert postmark_post(name, email).status_code == 200

    events = {event.event_type: event for event in TrackingEvent.objects.filter(esp="postmark")}
    assert set(events) == {"delivered", "opened", "clicked"}
    assert all(event.email_id == email.pk for event in events.values())
    assert events["delivered"].mta_response == "Test delivery webhook details"
    assert events["delivered"].message_id == POSTMARK_ID
    assert events["opened"].user_agent.startswith("Mozilla/5.0 (Macintosh")
    assert events["clicked"].click_url == "https://example.com/welcome"
    assert events["clicked"].raw["ClickLocation"] == "HTML"
    # Postmark gives these events no id: the key is a hash of the fields that name them.
    assert all(event.event_key.startswith("sha256:") for event in events.values())
    email.refresh_from_db()
    assert email.delivered_at == datetime(2026, 3, 1, 16, 33, 54, 907025, tzinfo=UTC)
    assert email.opened_at == datetime(2026, 3, 1, 16, 40, 12, 456000, tzinfo=UTC)
    assert email.clicked_at == datetime(2026, 3, 1, 16, 41, tzinfo=UTC)
    assert email.bounced_at is None
    assert not Suppression.objects.exists()


@pytest.mark.django_db
def test_postmark_replayed_webhook_writes_nothing_new(client_acme, webhook_auth):
    """Postmark retries a webhook it thinks failed: the same event is stored once."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    for _ in range(3):
        assert postmark_post("postmark_open.json", email).status_code == 200
        assert postmark_post("postmark_bounce_hard.json", email).status_code == 200

    assert TrackingEvent.objects.filter(esp="postmark").count() == 2
    assert Suppression.objects.count() == 1


@pytest.mark.django_db
def test_postmark_hard_bounce_suppresses_everywhere_soft_bounce_does_not(client_acme, webhook_auth):
    """HardBounce: a service-wide suppression naming the event; SoftBounce: only the event."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    assert postmark_post("postmark_bounce_soft.json", email).status_code == 200
    assert not Suppression.objects.exists()
    assert postmark_post("postmark_bounce_hard.json", email).status_code == 200

    hard = TrackingEvent.objects.get(esp="postmark", event_key="4323372036854775807")
    assert hard.event_type == "bounced"
    assert hard.reject_reason == "bounced"
    assert hard.mta_response.startswith("smtp;550 5.1.1")
    assert hard.description.startswith("The server was unable to deliver")
    [suppression] = Suppression.objects.all()
    assert suppression.address == "ada@example.com"  # normalized from Ada@Example.com
    assert suppression.reason == SuppressionReason.HARD_BOUNCE
    assert suppression.client is None
    assert suppression.source_event_id == hard.pk
    email.refresh_from_db()
    # The first bounce (the soft one, earlier) is the email's bounce time.
    assert email.bounced_at == datetime(2026, 3, 1, 16, 34, 5, tzinfo=UTC)


@pytest.mark.django_db
def test_postmark_spam_complaint_suppresses_everywhere(client_acme, webhook_auth):
    """A complaint: complained_at set, a service-wide `complaint` suppression."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    assert postmark_post("postmark_spam_complaint.json", email).status_code == 200

    email.refresh_from_db()
    assert email.complained_at == datetime(2026, 3, 1, 17, tzinfo=UTC)
    suppression = Suppression.objects.get()
    assert (suppression.reason, suppression.client) == (SuppressionReason.COMPLAINT, None)


@pytest.mark.django_db
def test_postmark_unsubscribe_suppresses_for_the_emails_client_and_topic(client_acme, webhook_auth):
    """An ESP unsubscribe belongs to the client (and topic) of the email it names."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark", topic="newsletter")

    assert postmark_post("postmark_subscription_change.json", email).status_code == 200

    suppression = Suppression.objects.get()
    assert suppression.reason == SuppressionReason.UNSUBSCRIBE
    assert suppression.client == client_acme
    assert suppression.topic == "newsletter"


@pytest.mark.django_db
def test_event_for_an_unknown_message_is_kept_unlinked(webhook_auth):
    """No such email: the event is stored without one (visible in the admin), answered 200."""
    body = payload("postmark_delivery.json", EMAIL_ID="not-a-uuid")

    response = post_json(POSTMARK, body, HTTP_AUTHORIZATION=BASIC_AUTH)

    assert response.status_code == 200
    event = TrackingEvent.objects.get()
    assert event.email_id is None
    assert event.recipient == "ada@example.com"


@pytest.mark.django_db
def test_event_links_by_message_id_when_metadata_is_missing(client_acme, webhook_auth):
    """Without our metadata, the provider's message id on the email finds it."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")
    body = json.loads(payload("postmark_delivery.json"))
    del body["Metadata"]

    post_json(POSTMARK, json.dumps(body), HTTP_AUTHORIZATION=BASIC_AUTH)

    assert TrackingEvent.objects.get().email_id == email.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"esp-hook:wrong").decode()],
    ids=["unsigned", "wrong-password"],
)
def test_postmark_without_the_webhook_secret_writes_nothing(
    client_acme, webhook_auth, authorization
):
    """No or wrong basic auth: 400, nothing stored, the email untouched."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = payload("postmark_bounce_hard.json", EMAIL_ID=str(email.pk))

    response = post_json(POSTMARK, body, **headers)

    assert response.status_code == 400
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()
    email.refresh_from_db()
    assert email.bounced_at is None


@pytest.mark.django_db
def test_webhook_secret_list_allows_rotation(client_acme, settings):
    """During a rotation both secrets are accepted."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["old:password", WEBHOOK_SECRET]}
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    assert postmark_post("postmark_delivery.json", email).status_code == 200
    old = "Basic " + base64.b64encode(b"old:password").decode()
    assert postmark_post("postmark_open.json", email, HTTP_AUTHORIZATION=old).status_code == 200
    assert TrackingEvent.objects.count() == 2


@pytest.mark.django_db
def test_oversized_webhook_is_413_and_writes_nothing(client_acme, webhook_auth, settings):
    """A body over MAILQUEUE_MAX_BODY_BYTES is refused before it is read."""
    settings.MAILQUEUE_MAX_BODY_BYTES = 512
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    response = postmark_post("postmark_bounce_hard.json", email)

    assert response.status_code == 413
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"'])
def test_authenticated_but_unreadable_payload_is_400(webhook_auth, body):
    """Garbage with valid credentials: a 400 naming the ESP, nothing stored."""
    response = post_json(POSTMARK, body, HTTP_AUTHORIZATION=BASIC_AUTH)

    assert response.status_code == 400
    assert "postmark" in response.json()["detail"]
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_database_error_is_a_5xx_so_the_esp_retries(client_acme, webhook_auth):
    """A failing write answers 500 (the ESP retries later) and leaves nothing half-written."""
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE suppressions RENAME TO suppressions_away")
    try:
        from django.test import Client as HttpClient

        response = HttpClient(raise_request_exception=False).generic(
            "POST",
            POSTMARK,
            payload("postmark_bounce_hard.json", EMAIL_ID=str(email.pk)),
            content_type="application/json",
            HTTP_AUTHORIZATION=BASIC_AUTH,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE suppressions_away RENAME TO suppressions")

    assert response.status_code == 500
    assert not TrackingEvent.objects.exists()
    email.refresh_from_db()
    assert email.bounced_at is None


# --- Mailgun ---------------------------------------------------------------------------------


def mailgun_body(name: str, email, *, key: str = MAILGUN_KEY) -> str:
    """A Mailgun fixture signed as Mailgun signs: HMAC-SHA256 of timestamp + token."""
    timestamp, token = str(int(time.time())), hashlib.sha256(name.encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return payload(
        name, EMAIL_ID=str(email.pk), TIMESTAMP=timestamp, TOKEN=token, SIGNATURE=signature
    )


@pytest.fixture
def mailgun(settings):
    """Mailgun's webhook signing key configured."""
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}


@pytest.mark.django_db
def test_mailgun_signed_events_set_fate_and_permanent_failure_suppresses(client_acme, mailgun):
    """delivered/opened set the times; failed+temporary is a deferral; failed+permanent a
    hard bounce that suppresses the address."""
    email = sent_email(client_acme, message_id="<20260301170000.1.ABCDEF@mg.acme.test>")

    for name in (
        "mailgun_delivered.json",
        "mailgun_opened.json",
        "mailgun_failed_temporary.json",
    ):
        assert post_json(MAILGUN, mailgun_body(name, email)).status_code == 200
    assert not Suppression.objects.exists()
    assert (
        post_json(MAILGUN, mailgun_body("mailgun_failed_permanent.json", email)).status_code == 200
    )

    types = dict(TrackingEvent.objects.filter(esp="mailgun").values_list("event_type", "email_id"))
    assert types == {
        "delivered": email.pk,
        "opened": email.pk,
        "deferred": email.pk,
        "bounced": email.pk,
    }
    bounce = TrackingEvent.objects.get(esp="mailgun", event_type="bounced")
    assert bounce.mta_response.startswith("5.1.1")
    suppression = Suppression.objects.get()
    assert (suppression.reason, suppression.source_event_id) == ("hard_bounce", bounce.pk)
    email.refresh_from_db()
    assert email.delivered_at == datetime.fromtimestamp(1772384801, tz=UTC)
    assert email.opened_at == datetime.fromtimestamp(1772384950, tz=UTC)
    assert email.bounced_at == datetime.fromtimestamp(1772385000.521, tz=UTC)


@pytest.mark.django_db
def test_mailgun_forged_signature_writes_nothing(client_acme, mailgun):
    """Signed with another key: 400, nothing stored or suppressed."""
    email = sent_email(client_acme)
    body = mailgun_body("mailgun_failed_permanent.json", email, key="someone-elses-key")

    assert post_json(MAILGUN, body).status_code == 400
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()


# --- SendGrid --------------------------------------------------------------------------------


@pytest.fixture
def sendgrid_key(settings):
    """SendGrid's signed event webhook: our test key pair, its public half configured."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.ANYMAIL = {
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": base64.b64encode(public).decode()
    }
    return private_key


def sendgrid_headers(private_key, body: str) -> dict:
    """The signature headers SendGrid sends: ECDSA-SHA256 over timestamp + body."""
    timestamp = str(int(time.time()))
    signature = private_key.sign(timestamp.encode() + body.encode(), ec.ECDSA(hashes.SHA256()))
    return {
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": base64.b64encode(signature).decode(),
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp,
    }


@pytest.mark.django_db
def test_sendgrid_batch_stores_every_event_only_bounce_type_bounce_suppresses(
    client_acme, sendgrid_key
):
    """One POST, six events: all stored (the unknown message's unlinked), a `bounce` of type
    bounce suppresses, a `blocked` one does not, the spam report does."""
    ada = sent_email(client_acme, to="ada@example.com", message_id="SG-MESSAGE-ADA")
    bob = sent_email(client_acme, to="bob@example.com", message_id="SG-MESSAGE-BOB")
    carol = sent_email(client_acme, to="carol@example.com", message_id="SG-MESSAGE-CAROL")
    body = payload("sendgrid_batch.json", EMAIL_ID=str(ada.pk))

    response = post_json(SENDGRID, body, **sendgrid_headers(sendgrid_key, body))

    assert response.status_code == 200
    events = {e.event_key: e for e in TrackingEvent.objects.filter(esp="sendgrid")}
    assert len(events) == 6
    assert events["sg-delivered-0001"].email_id == ada.pk
    assert events["sg-bounce-0001"].email_id == bob.pk
    assert events["sg-blocked-0001"].email_id == carol.pk
    assert events["sg-spamreport-0001"].email_id is None
    assert events["sg-open-0001"].user_agent.startswith("Mozilla/4.0")
    suppressed = dict(Suppression.objects.values_list("address", "reason"))
    assert suppressed == {"bob@example.com": "hard_bounce", "dave@example.com": "complaint"}
    ada.refresh_from_db()
    bob.refresh_from_db()
    assert ada.delivered_at == datetime.fromtimestamp(1772384802, tz=UTC)
    assert ada.opened_at == datetime.fromtimestamp(1772384900, tz=UTC)
    assert bob.bounced_at == datetime.fromtimestamp(1772384810, tz=UTC)


@pytest.mark.django_db
def test_sendgrid_batch_of_hundreds_takes_a_constant_number_of_queries(client_acme, sendgrid_key):
    """400 events in one POST: the same handful of statements as 4."""

    def batch(count: int) -> str:
        emails = [
            sent_email(client_acme, to=f"user{n}@example.com", message_id=f"SG-{count}-{n}")
            for n in range(count // 2)
        ]
        events = []
        for n, email in enumerate(emails):
            for kind in ("delivered", "open"):
                events.append(
                    {
                        "email": email.recipient,
                        "timestamp": 1772384802 + n,
                        "event": kind,
                        "sg_event_id": f"sg-{count}-{kind}-{n}",
                        "anymail_id": email.message_id,
                    }
                )
        return json.dumps(events)

    counts = []
    for size in (4, 400):
        body = batch(size)
        # The active outbound endpoints are reloaded every few seconds: not during the count.
        webhook_subscriptions_forget()
        webhook_subscriptions()
        with CaptureQueriesContext(connection) as queries:
            response = post_json(SENDGRID, body, **sendgrid_headers(sendgrid_key, body))
        assert response.status_code == 200
        counts.append(len(queries))

    assert counts[0] == counts[1]
    assert counts[1] <= 8
    assert TrackingEvent.objects.filter(esp="sendgrid").count() == 404


@pytest.mark.django_db
def test_sendgrid_unsigned_batch_writes_nothing(client_acme, sendgrid_key):
    """No signature headers: 400 and nothing stored."""
    body = payload("sendgrid_batch.json", EMAIL_ID="x")

    assert post_json(SENDGRID, body).status_code == 400
    assert not TrackingEvent.objects.exists()


# --- Resend ----------------------------------------------------------------------------------


@pytest.fixture
def resend(settings):
    """Resend's svix signing secret configured."""
    settings.ANYMAIL = {"RESEND_SIGNING_SECRET": RESEND_SECRET}


def resend_headers(body: str, message_id: str, secret: str = RESEND_SECRET) -> dict:
    """The svix headers Resend sends with a webhook."""
    now = datetime.now(tz=UTC)
    signature = SvixWebhook(secret).sign(message_id, now, body)
    return {
        "HTTP_SVIX_ID": message_id,
        "HTTP_SVIX_TIMESTAMP": str(int(now.timestamp())),
        "HTTP_SVIX_SIGNATURE": signature,
    }


@pytest.mark.django_db
def test_resend_delivered_and_permanent_bounce(client_acme, resend):
    """Delivered sets delivered_at; a Permanent bounce suppresses; each keyed by svix-id."""
    email = sent_email(client_acme, message_id="56761188-7520-42d8-8898-ff6fc54ce618")
    delivered, bounced = payload("resend_delivered.json"), payload("resend_bounced.json")

    assert post_json(RESEND, delivered, **resend_headers(delivered, "msg_1")).status_code == 200
    assert post_json(RESEND, bounced, **resend_headers(bounced, "msg_2")).status_code == 200
    # Svix retries the same message with a new signature and timestamp: stored once.
    assert post_json(RESEND, bounced, **resend_headers(bounced, "msg_2")).status_code == 200

    keys = dict(TrackingEvent.objects.filter(esp="resend").values_list("event_key", "event_type"))
    assert keys == {"msg_1": "delivered", "msg_2": "bounced"}
    email.refresh_from_db()
    assert email.delivered_at == datetime(2026, 3, 1, 17, 20, 1, tzinfo=UTC)
    assert email.bounced_at == datetime(2026, 3, 1, 17, 20, 5, tzinfo=UTC)
    assert Suppression.objects.get().reason == "hard_bounce"


@pytest.mark.django_db
def test_resend_forged_signature_writes_nothing(client_acme, resend):
    """Signed with another secret: 400, nothing stored."""
    sent_email(client_acme, message_id="56761188-7520-42d8-8898-ff6fc54ce618")
    body = payload("resend_bounced.json")
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()

    assert post_json(RESEND, body, **resend_headers(body, "msg_9", other)).status_code == 400
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()


@pytest.mark.django_db
def test_webhook_without_any_authentication_configured_is_refused(client_acme, settings):
    """No WEBHOOK_SECRET and no signing key: anymail would accept anyone; we answer 403."""
    settings.ANYMAIL = {}
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    response = post_json(POSTMARK, payload("postmark_bounce_hard.json", EMAIL_ID=str(email.pk)))

    assert response.status_code == 403
    assert "ANYMAIL_WEBHOOK_SECRET" in response.json()["detail"]
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()


@pytest.mark.django_db
def test_esp_events_reach_the_clients_outbound_webhook(client_acme, webhook_auth, settings):
    """A bounce Postmark reports becomes a `bounced` delivery to the client's endpoint, once."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    webhook_endpoint_create(client=client_acme, url="http://127.0.0.1:9/hooks", events=["bounced"])
    webhook_subscriptions_forget()
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    for name in (
        "postmark_delivery.json",
        "postmark_bounce_hard.json",
        "postmark_bounce_hard.json",
    ):
        assert postmark_post(name, email).status_code == 200

    [delivery] = WebhookDelivery.objects.all()
    assert delivery.event_type == "bounced"
    assert delivery.payload["email"]["id"] == str(email.pk)
    assert delivery.payload["data"]["esp"] == "postmark"
    assert delivery.payload["data"]["reject_reason"] == "bounced"
    webhook_subscriptions_forget()


@pytest.mark.django_db
def test_nul_characters_in_a_payload_are_dropped_not_a_500(webhook_auth):
    """PostgreSQL refuses NULs in text and jsonb: they are dropped, the event stored."""
    body = json.loads(payload("postmark_delivery.json", EMAIL_ID="x"))
    body["Details"] = "250 OK\u0000 queued"
    body["Metadata"]["note"] = "a\u0000b"

    response = post_json(POSTMARK, json.dumps(body), HTTP_AUTHORIZATION=BASIC_AUTH)

    assert response.status_code == 200
    event = TrackingEvent.objects.get()
    assert event.mta_response == "250 OK queued"
    assert event.raw["Metadata"]["note"] == "ab"


# --- Requests anymail cannot handle: answered, never a 500 ------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body"),
    [
        (MAILGUN, "[]"),
        (MAILGUN, '{"signature": 1}'),
        (MAILGUN, '{"signature": {"token": 1, "timestamp": [], "signature": {}}}'),
        (MAILGUN, '{"signature": {"token": "t", "timestamp": "\u00e9", "signature": "s"}}'),
    ],
    ids=["list", "signature-not-an-object", "signature-fields-not-text", "non-ascii-timestamp"],
)
def test_mailgun_malformed_signature_block_is_400(client_acme, mailgun, path, body):
    """Only the signing key set, a body anymail's validator trips over: 400, nothing stored."""
    response = post_json(path, body)

    assert response.status_code == 400
    assert "mailgun" in response.json()["detail"]
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        MAILGUN,
        "/webhooks/mandrill/tracking/",
        "/webhooks/postal/tracking/",
        "/webhooks/mailersend/tracking/",
        "/webhooks/unisender_go/tracking/",
        "/webhooks/mailgun/inbound/",
    ],
)
def test_webhook_whose_settings_are_missing_is_403_for_anyone(client_acme, settings, path):
    """No ANYMAIL settings at all: anymail raises a configuration error for these ESPs (a 500
    anyone could cause); it is the 403 "not configured" and nothing is written."""
    settings.ANYMAIL = {}
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")

    response = post_json(path, payload("postmark_bounce_hard.json", EMAIL_ID=str(email.pk)))

    assert response.status_code == 403
    assert "not configured" in response.json()["detail"]
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()


# --- One event, one dispatch ------------------------------------------------------------------


def _lock_waiters() -> int:
    """How many sessions of this database wait for a lock (another transaction's row)."""
    with connection.cursor() as cursor:
        # Inside a transaction the activity view is a snapshot unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_webhook_store_and_dispatch_once(client_acme, settings):
    """The ESP delivers the same event twice at once: the second request waits for the first,
    stores nothing and sends no outbound webhook of its own."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    webhook_endpoint_create(client=client_acme, url="http://127.0.0.1:9/hooks", events=["bounced"])
    webhook_subscriptions_forget()
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")
    event = AnymailTrackingEvent(
        event_type="bounced",
        event_id="bounce-0001",
        message_id=POSTMARK_ID,
        recipient="ada@example.com",
        timestamp=datetime(2026, 3, 1, 17, tzinfo=UTC),
        metadata={"mailqueue_email_id": str(email.pk)},
        esp_event={"Type": "HardBounce"},
    )
    stored = {}

    def second_delivery() -> None:
        try:
            stored["second"] = esp_events_record(esp="postmark", events=[event])
        finally:
            connections.close_all()

    with transaction.atomic():
        stored["first"] = esp_events_record(esp="postmark", events=[event])
        racer = threading.Thread(target=second_delivery)
        racer.start()
        # Commit only once the second request waits on the row the first one wrote.
        deadline = time.monotonic() + 10
        while _lock_waiters() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _lock_waiters() == 1
    racer.join(timeout=10)

    assert len(stored["first"]) == 1
    assert stored["second"] == []
    assert TrackingEvent.objects.count() == 1
    [delivery] = WebhookDelivery.objects.all()
    assert delivery.event_type == "bounced"
    webhook_subscriptions_forget()


# --- Rotating the webhook secret --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEBHOOK_SECRET", "esp-hook:s3cret", "esp-hook:s3cret"),
        ("WEBHOOK_SECRET", "old:pw,new:pw", ["old:pw", "new:pw"]),
        ("WEBHOOK_SECRET", "old:pw, new:pw,", ["old:pw", "new:pw"]),
        ("POSTMARK_SERVER_TOKEN", "a,b", "a,b"),
    ],
)
def test_anymail_webhook_secret_with_commas_is_a_list(name, value, expected):
    """ANYMAIL_WEBHOOK_SECRET=old:pw,new:pw is two secrets (a rotation), not one password;
    other ANYMAIL_* values stay strings."""
    assert anymail_env_value(name, value) == expected


@pytest.mark.django_db
def test_rotated_secret_from_the_environment_accepts_both(client_acme, settings):
    """The value settings.py makes of `old:password,<new>` lets both credentials in."""
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": anymail_env_value("WEBHOOK_SECRET", f"old:password,{WEBHOOK_SECRET}")
    }
    email = sent_email(client_acme, message_id=POSTMARK_ID, provider="postmark")
    old = "Basic " + base64.b64encode(b"old:password").decode()

    assert postmark_post("postmark_delivery.json", email).status_code == 200
    assert postmark_post("postmark_open.json", email, HTTP_AUTHORIZATION=old).status_code == 200
    assert TrackingEvent.objects.count() == 2
