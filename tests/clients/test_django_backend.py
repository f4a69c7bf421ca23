"""The Django email backend's mapping of EmailMessage to the API, against a faked HTTP boundary
(what the service does with it is checked end to end in test_live.py)."""

import base64
import datetime as dt
import json
import smtplib
from email.mime.image import MIMEImage

import pytest
import responses
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy
from mailqueue_client import UnsupportedFeature, ValidationError

BACKEND = "mailqueue_client.django.EmailBackend"
API = "https://mail.example.com/api/v1/"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def backend_settings(settings):
    """The two settings the backend needs, read when a connection opens."""
    settings.EMAIL_BACKEND = BACKEND
    settings.MAILQUEUE_URL = "https://mail.example.com"
    settings.MAILQUEUE_API_KEY = "mq_test_secret"
    settings.TIME_ZONE = "Europe/Paris"
    settings.DEFAULT_FROM_EMAIL = "Acme <hello@example.com>"
    return settings


@pytest.fixture
def fake():
    """The HTTP boundary."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _bodies(fake) -> list[dict]:
    return [json.loads(call.request.body) for call in fake.calls]


def test_multi_alternatives_become_one_email_with_every_part(backend_settings, fake):
    """html alternative, a file, an inline image with its Content-ID, cc/bcc/reply-to and a
    custom header: all in one POST /emails/ with an Idempotency-Key."""
    fake.post(f"{API}emails/", json={"id": "e1", "status": "queued"}, status=202)
    message = mail.EmailMultiAlternatives(
        subject="Your report",
        body="See the attachment.",
        from_email="Acme <hello@example.com>",
        to=["Ada <ada@example.com>"],
        cc=["ops@example.com"],
        bcc=["audit@example.com"],
        reply_to=["support@example.com"],
        headers={"X-Campaign": "reports"},
    )
    message.attach_alternative('<p>See <img src="cid:logo@acme"></p>', "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@acme>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message.attach(logo)

    assert message.send() == 1

    (body,) = _bodies(fake)
    assert body == {
        "to": ["Ada <ada@example.com>"],
        "cc": ["ops@example.com"],
        "bcc": ["audit@example.com"],
        "reply_to": ["support@example.com"],
        "from_email": "Acme <hello@example.com>",
        "subject": "Your report",
        "text": "See the attachment.",
        "html": '<p>See <img src="cid:logo@acme"></p>',
        "headers": {"X-Campaign": "reports"},
        "attachments": [
            {
                "filename": "report.csv",
                "content": base64.b64encode(b"a,b\n1,2\n").decode(),
                "mimetype": "text/csv",
            },
            {
                "filename": "logo.png",
                "content": base64.b64encode(PNG).decode(),
                "mimetype": "image/png",
                "content_id": "logo@acme",
            },
        ],
    }
    assert fake.calls[0].request.headers["Idempotency-Key"]
    assert message.mailqueue_response == {"id": "e1", "status": "queued"}


def test_html_content_subtype_and_anymail_attributes(backend_settings, fake):
    """content_subtype "html" makes the body HTML; template_id, merge_global_data, tags,
    metadata, priority, send_at (naive: Django's time zone) and idempotency_key map to the
    API's fields; a Reply-To header becomes reply_to."""
    fake.post(f"{API}emails/", json={"id": "e1"}, status=202)
    html = mail.EmailMessage("Hi", "<b>Hi</b>", to=["ada@example.com"])
    html.content_subtype = "html"
    templated = mail.EmailMessage(to=["bob@example.com"], headers={"Reply-To": "Help <h@x.com>"})
    templated.template_id = "welcome"
    templated.merge_global_data = {"name": "Bob"}
    templated.tags = ["onboarding"]
    templated.metadata = {"user_id": 42}
    templated.priority = "high"
    templated.send_at = dt.datetime(2030, 1, 2, 9, 30)
    templated.idempotency_key = "signup-42"

    assert mail.get_connection().send_messages([html, templated]) == 2

    first, second = _bodies(fake)
    assert first["html"] == "<b>Hi</b>" and "text" not in first
    assert first["from_email"] == "Acme <hello@example.com>"
    assert second == {
        "to": ["bob@example.com"],
        "reply_to": ["Help <h@x.com>"],
        "from_email": "Acme <hello@example.com>",
        "template": "welcome",
        "context": {"name": "Bob"},
        "send_at": "2030-01-02T09:30:00+01:00",
        "tags": ["onboarding"],
        "metadata": {"user_id": 42},
        "priority": "high",
    }
    assert fake.calls[1].request.headers["Idempotency-Key"] == "signup-42"


def test_lazy_strings_and_a_forwarded_message(backend_settings, fake):
    """Django accepts lazy translation strings as addresses and subject, and an EmailMessage
    as a message/rfc822 attachment: both are sent as plain text."""
    fake.post(f"{API}emails/", json={"id": "e1"}, status=202)
    forwarded = mail.EmailMessage("Original", "First text", to=["x@example.com"])
    message = mail.EmailMessage(
        gettext_lazy("Subject"), "Body", to=[gettext_lazy("ada@example.com")]
    )
    message.attach("original.eml", forwarded, "message/rfc822")

    assert message.send() == 1

    (body,) = _bodies(fake)
    assert body["to"] == ["ada@example.com"] and body["subject"] == "Subject"
    (item,) = body["attachments"]
    assert item["mimetype"] == "message/rfc822"
    assert b"Subject: Original" in base64.b64decode(item["content"])


def test_merge_data_is_sent_as_one_batch(backend_settings, fake):
    """One recipient per `to` address, each with its merge_data as context and the shared
    metadata plus its merge_metadata."""
    fake.post(f"{API}batches/", json={"id": "b1", "count": 2}, status=202)
    message = mail.EmailMessage(to=["Ada <ada@example.com>", "bob@example.com"])
    message.template_id = "order-status"
    message.merge_global_data = {"company_name": "Acme"}
    message.merge_data = {"ada@example.com": {"name": "Ada"}, "bob@example.com": {"name": "Bob"}}
    message.merge_metadata = {"ada@example.com": {"order": 1}}
    message.metadata = {"source": "shop"}

    assert message.send() == 1

    (body,) = _bodies(fake)
    assert body == {
        "template": "order-status",
        "context": {"company_name": "Acme"},
        "recipients": [
            {
                "to": ["Ada <ada@example.com>"],
                "context": {"name": "Ada"},
                "metadata": {"source": "shop", "order": 1},
            },
            {"to": ["bob@example.com"], "context": {"name": "Bob"}, "metadata": {"source": "shop"}},
        ],
        "from_email": "Acme <hello@example.com>",
    }


def test_merge_data_with_what_a_batch_cannot_carry_is_refused(backend_settings, fake):
    """A batch has no cc or attachments: refused before any request, naming them."""
    message = mail.EmailMessage(to=["ada@example.com"], cc=["x@example.com"])
    message.template_id = "t"
    message.merge_data = {}
    message.attach("a.txt", "x")

    with pytest.raises(UnsupportedFeature, match="cc, attachments"):
        message.send()

    assert len(fake.calls) == 0


def test_refusal_raises_with_the_apis_reason_unless_fail_silently(backend_settings, fake):
    """send_mail raises the service's 400 (an SMTPException, as Django documents); with
    fail_silently it returns 0; send_mass_mail counts only the accepted ones."""
    fake.post(
        f"{API}emails/",
        json={"from_email": ["hello@unverified.test is not a verified sender domain."]},
        status=400,
    )

    with pytest.raises(smtplib.SMTPException) as raised:
        mail.send_mail("s", "t", "hello@unverified.test", ["ada@example.com"])
    assert isinstance(raised.value, ValidationError)
    assert "not a verified sender domain" in str(raised.value)
    assert mail.send_mail("s", "t", "hello@unverified.test", ["a@x.com"], fail_silently=True) == 0

    fake.replace(responses.POST, f"{API}emails/", json={"id": "e1"}, status=202)
    fake.add(
        responses.POST,
        f"{API}emails/",
        json={"to": ["Enter a valid email address."]},
        status=400,
    )
    datatuple = [("s", "t", None, ["a@x.com"]), ("s", "t", None, ["b@x.com"])]
    assert mail.send_mass_mail(datatuple, fail_silently=True) == 1


def test_missing_settings_are_a_configuration_error(settings):
    """Without MAILQUEUE_URL the backend says which setting to set, even with fail_silently."""
    settings.EMAIL_BACKEND = BACKEND
    settings.MAILQUEUE_URL = ""
    settings.MAILQUEUE_API_KEY = "k"

    with pytest.raises(ImproperlyConfigured, match="MAILQUEUE_URL"):
        mail.send_mail("s", "t", None, ["ada@example.com"], fail_silently=True)


def test_no_messages_opens_nothing(backend_settings, fake):
    """Django's contract: an empty list sends nothing and returns 0."""
    assert mail.get_connection().send_messages([]) == 0
    assert len(fake.calls) == 0


def test_a_message_without_recipients_is_skipped_like_djangos_backends_do(backend_settings, fake):
    """No request and not counted, as Django's SMTP backend does; the next message goes."""
    fake.post(f"{API}emails/", json={"id": "e1", "status": "queued"}, status=202)
    empty = mail.EmailMessage(subject="Nobody", body="-", to=[])
    real = mail.EmailMessage(subject="Someone", body="-", to=["ada@example.com"])

    assert mail.get_connection().send_messages([empty, real]) == 1
    assert [body["subject"] for body in _bodies(fake)] == ["Someone"]
