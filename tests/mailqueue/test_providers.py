"""ESP providers through anymail, faked only at their HTTP/API boundary, and the config checks."""

import json
from email import message_from_string, policy

import boto3
import pytest
import responses
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses import ses_backends

from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.providers import get_provider
from tests.helpers import assert_deferred, sender_domains_verify
from tracking.models import EventType

POSTMARK_URL = "https://api.postmarkapp.com/email"
MAILGUN_URL = "https://api.mailgun.net/v3/acme.test/messages"


@pytest.fixture
def send(send):
    """Accept one receipt with a text and an HTML part (the shared `send` with this content)."""

    def receipt(to: str = "ada@example.com", **fields) -> EmailJob:
        content = {"subject": "Your receipt", "text": "Thanks", "html": "<p>Thanks</p>"}
        return send(to, **{**content, **fields})

    return receipt


@pytest.fixture
def ses(settings, monkeypatch):
    """A moto-backed SES in us-east-1 with `billing@acme.test` verified as a sender."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings.EMAIL_PROVIDERS = ["amazon_ses"]
    settings.ANYMAIL = {}
    with mock_aws():
        boto3.client("sesv2", region_name="us-east-1").create_email_identity(
            EmailIdentity="billing@acme.test"
        )
        yield ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


@pytest.fixture
def postmark(settings):
    """Postmark configured with a token; `responses` stands in for its HTTP API."""
    settings.EMAIL_PROVIDERS = ["postmark"]
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token"}
    with responses.RequestsMock() as mock:
        yield mock


def postmark_ok(to: str, message_id: str) -> dict:
    """Postmark's answer to an accepted message."""
    return {
        "To": to,
        "SubmittedAt": "2026-01-01T00:00:00Z",
        "MessageID": message_id,
        "ErrorCode": 0,
        "Message": "OK",
    }


@pytest.mark.django_db
def test_amazon_ses_sends_and_stores_the_ses_message_id(ses, send, work, issued_key):
    """The message reaches SES with our headers; SES's id is the email's message_id."""
    sender_domains_verify(issued_key.api_key.client, "acme.test")
    email = send(from_email="Billing <billing@acme.test>", headers={"X-Campaign": "q3"})

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.provider == "amazon_ses"
    [sent] = ses.sent_messages
    assert email.message_id == sent.id
    assert email.events.get().event_type == EventType.SENT
    raw = message_from_string(sent.raw_data, policy=policy.default)
    assert raw["Subject"] == "Your receipt"
    assert raw["To"] == "ada@example.com"
    assert raw["X-Campaign"] == "q3"
    assert set(sent.destinations) == {"ada@example.com"}


@pytest.mark.django_db
def test_amazon_ses_refusing_an_unverified_sender_fails_the_email(ses, send, work, issued_key):
    """SES's MessageRejected is about the message: failed, not retried."""
    # Verified here (an operator vouched for it), unverified at SES: SES has the last word.
    sender_domains_verify(issued_key.api_key.client, "elsewhere.test")
    email = send(from_email="stranger@elsewhere.test")

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.attempts == 1
    assert "MessageRejected" in email.last_error
    assert "stranger@elsewhere.test" in email.last_error
    assert ses.sent_messages == []


@pytest.mark.django_db
def test_postmark_sends_and_stores_postmark_message_id(postmark, send, work):
    """The request carries our content and token; Postmark's MessageID is stored."""
    postmark.post(POSTMARK_URL, json=postmark_ok("ada@example.com", "pm-0001"))
    email = send(tags=["receipts"], metadata={"order": "42"})

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert email.provider == "postmark"
    assert email.message_id == "pm-0001"
    [call] = postmark.calls
    assert call.request.headers["X-Postmark-Server-Token"] == "test-token"
    body = json.loads(call.request.body)
    assert body["To"] == "ada@example.com"
    assert body["Subject"] == "Your receipt"
    assert body["TextBody"] == "Thanks"
    assert body["HtmlBody"] == "<p>Thanks</p>"
    assert body["Tag"] == "receipts"
    assert body["Metadata"] == {"order": "42", "mailqueue_email_id": str(email.pk)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "reason"), [(500, "Oops"), (429, "Rate limit")], ids=["server-error", "rate-limit"]
)
def test_postmark_server_error_or_rate_limit_is_retried(postmark, send, work, status, reason):
    """A 500, or a 429 ("slow down"), is not about the message: it is deferred for later."""
    postmark.post(POSTMARK_URL, status=status, json={"ErrorCode": status, "Message": reason})
    email = send()

    work()

    assert_deferred(email)
    assert str(status) in email.last_error


@pytest.mark.django_db
def test_postmark_rejecting_the_message_fails_it(postmark, send, work):
    """A 422 about the message itself fails the email at once."""
    postmark.post(
        POSTMARK_URL,
        status=422,
        json={"ErrorCode": 300, "Message": "Invalid 'From' address: 'x'."},
    )
    email = send()

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.attempts == 1
    assert email.delivery_attempts.get().outcome == DeliveryAttempt.Outcome.PERMANENT
    assert "Invalid 'From' address" in email.last_error


@pytest.mark.django_db
def test_postmark_provider_reuses_one_http_session(postmark, send, work, settings):
    """Two emails in one worker run go through the same requests session (one send thread)."""
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    sessions = []

    def accept(request):
        sessions.append(get_provider("postmark").backend.session)
        to = json.loads(request.body)["To"]
        return 200, {}, json.dumps(postmark_ok(to, f"pm-{to}"))

    postmark.add_callback(responses.POST, POSTMARK_URL, callback=accept)
    first = send("a@example.com")
    second = send("b@example.com")

    work()

    assert len(postmark.calls) == 2
    assert sessions[0] is not None
    assert sessions[0] is sessions[1]
    assert EmailJob.objects.get(pk=first.pk).message_id == "pm-a@example.com"
    assert EmailJob.objects.get(pk=second.pk).message_id == "pm-b@example.com"


@pytest.mark.django_db
def test_mailgun_accepts_one_message_and_refuses_a_bad_one(settings, send, work, issued_key):
    """Another ESP by name: a 200 sends with Mailgun's id, a 400 fails the email for good."""
    sender_domains_verify(issued_key.api_key.client, "acme.test")
    settings.EMAIL_PROVIDERS = ["mailgun"]
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key-test"}
    with responses.RequestsMock() as mock:
        mock.post(
            MAILGUN_URL,
            json={"id": "<20260101.1@acme.test>", "message": "Queued. Thank you."},
        )
        mock.post(MAILGUN_URL, status=400, json={"message": "'to' parameter is not valid"})
        good = send("good@example.com", from_email="billing@acme.test")
        bad = send("bad@example.com", from_email="billing@acme.test")

        work()

        assert len(mock.calls) == 2
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, good.provider) == (EmailStatus.SENT, "mailgun"), good.last_error
    assert good.message_id == "<20260101.1@acme.test>"
    assert bad.status == EmailStatus.FAILED
    assert bad.delivery_attempts.get().outcome == DeliveryAttempt.Outcome.PERMANENT
    assert "'to' parameter is not valid" in bad.last_error


@pytest.mark.django_db
def test_esp_without_credentials_defers_the_email_with_a_clear_error(settings, send, work):
    """A provider whose settings are missing is a configuration problem: retried, explained."""
    settings.EMAIL_PROVIDERS = ["postmark"]
    settings.ANYMAIL = {}
    with responses.RequestsMock():
        email = send()
        work()

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert "POSTMARK_SERVER_TOKEN" in email.last_error


@pytest.mark.django_db
def test_esp_outage_fails_over_to_the_next_esp(settings, send, work, issued_key):
    """EMAIL_PROVIDERS = postmark, mailgun: a Postmark 503 is retried at Mailgun at once."""
    settings.EMAIL_PROVIDERS = ["postmark", "mailgun"]
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "MAILGUN_API_KEY": "key-t"}
    sender_domains_verify(issued_key.api_key.client, "acme.test")
    with responses.RequestsMock() as mock:
        mock.post(POSTMARK_URL, status=503, body="unavailable")
        mock.post(MAILGUN_URL, json={"id": "<1@acme.test>", "message": "Queued. Thank you."})
        email = send(from_email="billing@acme.test")
        work()

    email.refresh_from_db()
    assert (email.status, email.provider) == (EmailStatus.SENT, "mailgun")
    assert [(a.provider, a.outcome) for a in email.delivery_attempts.all()] == [
        ("postmark", DeliveryAttempt.Outcome.TRANSIENT),
        ("mailgun", DeliveryAttempt.Outcome.SENT),
    ]


def test_unknown_provider_name_stops_the_service_at_startup(settings):
    """A typo in EMAIL_PROVIDERS is reported by `manage.py check` as mailqueue.E002."""
    settings.EMAIL_PROVIDERS = ["smtp", "postmrak"]

    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    assert "mailqueue.E002" in str(excinfo.value)
    assert "postmrak" in str(excinfo.value)


def test_no_provider_in_production_stops_the_service_at_startup(settings):
    """Without EMAIL_PROVIDERS and with DEBUG off, `manage.py check` reports mailqueue.E001."""
    settings.DEBUG = False
    settings.EMAIL_PROVIDERS = []

    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    assert "mailqueue.E001" in str(excinfo.value)


def test_known_providers_pass_the_checks(settings):
    """Built-in and anymail ESP names are accepted."""
    settings.EMAIL_PROVIDERS = ["smtp", "amazon_ses", "postmark", "mailgun", "capture"]

    call_command("check")
