"""Fixtures for one-time codes: the shipped verification template, issuing through the API,
and reading the code out of the message a real worker delivered to the SMTP sink."""

import io
import re

import pytest
from django.core.management import call_command

from tests.helpers import run_worker

OTP_URL = "/api/v1/otp/"
VERIFY_URL = "/api/v1/otp/verify/"
_CODE_IN_TEXT = re.compile(r"verification code is:\s+(\d+)")


@pytest.fixture
def verification_template(db):
    """The templates shipped in fixtures/templates/, loaded as an operator loads them."""
    call_command("load_default_templates", stdout=io.StringIO())


@pytest.fixture
def issue(api, verification_template, django_capture_on_commit_callbacks):
    """POST /api/v1/otp/ (its drain request reaches Redis as on a real commit)."""

    def post(client=None, **body):
        body = {"email": "ada@example.com", **body}
        with django_capture_on_commit_callbacks(execute=True):
            return (client or api).post(OTP_URL, body, format="json")

    return post


@pytest.fixture
def deliver(smtp_sink, django_capture_on_commit_callbacks):
    """Run a burst worker; return the codes found in the messages the sink received since."""

    def run() -> list[str]:
        seen = len(smtp_sink.messages)
        with django_capture_on_commit_callbacks(execute=True):
            run_worker()
        return [code_in(received.message) for received in smtp_sink.messages[seen:]]

    return run


def code_in(message) -> str:
    """The code in a received message's plain-text part."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    match = _CODE_IN_TEXT.search(text)
    assert match, text
    return match.group(1)
