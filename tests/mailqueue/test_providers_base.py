"""The one policy for exceptions no provider classified: retried, not taken for an outage."""

import pytest
from django.core.mail import EmailMessage

from mailqueue.errors import DeliveryError
from mailqueue.models import DeliveryAttempt, EmailStatus
from mailqueue.providers import get_provider, providers_in_service
from tests.helpers import assert_deferred


class Surprise(Exception):
    """An exception no provider knows."""


@pytest.fixture
def surprise_in_smtp(monkeypatch):
    """The SMTP provider's fast path raises an exception nobody classified."""

    def fail(message: EmailMessage) -> bytes:
        raise Surprise("unforeseen")

    monkeypatch.setattr("mailqueue.providers.smtp.fast_message_bytes", fail)


@pytest.mark.parametrize("name", ["smtp", "console", "capture", "postmark"])
def test_every_provider_retries_an_unclassified_exception(smtp_sink, settings, monkeypatch, name):
    """Whichever provider raises it, an unforeseen exception is transient and not an outage."""
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token"}
    provider = get_provider(name)

    def fail(self, message: EmailMessage) -> None:
        raise Surprise("unforeseen")

    monkeypatch.setattr(type(provider), "_send", fail)

    with pytest.raises(DeliveryError) as excinfo:
        provider.send(EmailMessage("Hi", "Hi", "from@example.com", ["ada@example.com"]))

    error = excinfo.value
    assert (error.transient, error.outage) == (True, False)
    assert error.message == "unforeseen"
    assert error.error_class == f"{__name__}.Surprise"


@pytest.mark.django_db
def test_an_unclassified_smtp_exception_defers_the_email(smtp_sink, surprise_in_smtp, send, work):
    """The email is retried later, and the SMTP provider stays in service for other emails."""
    email = send()

    work()

    assert_deferred(email)
    assert email.error_class.endswith(".Surprise")
    assert providers_in_service([get_provider("smtp")]) == [get_provider("smtp")]


@pytest.mark.django_db
def test_an_unclassified_exception_fails_over_to_the_next_provider(
    smtp_sink, surprise_in_smtp, settings, send, work
):
    """EMAIL_PROVIDERS = smtp, capture: the capture inbox takes the email at once."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    email = send()

    work()

    email.refresh_from_db()
    assert (email.status, email.provider) == (EmailStatus.SENT, "capture")
    assert [(a.provider, a.outcome) for a in email.delivery_attempts.all()] == [
        ("smtp", DeliveryAttempt.Outcome.TRANSIENT),
        ("capture", DeliveryAttempt.Outcome.SENT),
    ]
