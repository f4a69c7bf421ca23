"""A rule's secret keys: a one-time code sent by an event reaches the recipient and is not
readable in the stored email once it is sent."""

import io

import pytest
from django.core.management import call_command

from event_sends.models import EventRule
from mailqueue.models import EmailJob, EmailStatus
from mailqueue.services.redaction import MASK
from tests.event_sends.conftest import consume, publish
from tests.event_sends.test_commands import SHIPPED
from tests.helpers import run_worker
from tests.otp.conftest import code_in
from tests.otp.test_redaction import rows_text

pytestmark = pytest.mark.django_db
URL = "/api/v1/event-rules/"
CODE = "739146"
VERIFY_URL = "https://app.acme.example/verify?token=5ecret-t0ken"


def test_the_shipped_verification_rule_masks_the_code_once_sent(
    redis, smtp_sink, django_capture_on_commit_callbacks
):
    """user.verification_requested through the shipped rule: the message has the code, no
    stored row of the email (context, subject, bodies, events, attempts) has it afterwards."""
    call_command("load_default_templates", stdout=io.StringIO())
    call_command("load_event_rules", "--client", "acme", stdout=io.StringIO())
    data = {
        "email": "ada@example.com",
        "code": CODE,
        "expires_in_minutes": 10,
        "verify_url": VERIFY_URL,
        "name": "Ada",
    }
    publish(
        redis, {"id": "v1", "type": "user.verification_requested", "client": "acme", "data": data}
    )

    with django_capture_on_commit_callbacks(execute=True):
        consume()
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    (received,) = smtp_sink.messages
    assert code_in(received.message) == CODE
    assert VERIFY_URL in received.message.get_body(preferencelist=("plain",)).get_content()
    email = EmailJob.objects.get()
    assert email.status == EmailStatus.SENT
    stored = rows_text(email.pk)
    assert CODE not in stored
    assert "5ecret-t0ken" not in stored
    assert email.context["code"] == MASK and email.context["name"] == "Ada"
    assert MASK in email.subject


def test_every_shipped_rule_whose_template_shows_a_code_or_token_masks_it():
    """The verification code and link, the reset link and the waitlist claim link."""
    secret = {rule["event_type"]: rule.get("secret_keys", []) for rule in SHIPPED}
    assert secret["user.verification_requested"] == ["code", "verify_url"]
    assert secret["password.reset_requested"] == ["reset_url"]
    assert secret["waitlist.spot_available"] == ["claim_url"]


def test_a_secret_key_missing_from_the_event_is_not_required(redis, booking_rule):
    """The rule names `code`; an event without one still sends, with nothing to mask."""
    booking_rule.secret_keys = ["code"]
    booking_rule.save()
    publish(
        redis,
        {
            "id": "b1",
            "type": "booking.confirmed",
            "client": "acme",
            "data": {
                "user": {"email": "ada@example.com"},
                "booking": {"name": "A", "service": "s"},
            },
        },
    )

    consume()

    assert EmailJob.objects.get().secret_context_keys == []


def test_the_api_sets_and_checks_secret_keys(api, welcome_template):
    """secret_keys is a list of context key names; anything else is a 400 naming it."""
    rule = {"event_type": "user.registered", "template": "welcome", "recipient_path": "email"}

    created = api.post(URL, {**rule, "secret_keys": ["code"]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["secret_keys"] == ["code"]
    assert EventRule.objects.get().secret_keys == ["code"]
    detail = f"{URL}{created.json()['id']}/"
    assert api.patch(detail, {"secret_keys": []}, format="json").json()["secret_keys"] == []
    for bad in (["user.code"], ["1code"], [""], "code"):
        response = api.patch(detail, {"secret_keys": bad}, format="json")
        assert response.status_code == 400, bad
        assert "secret_keys" in response.json()
    assert api.post(URL, rule, format="json").json()["secret_keys"] == []


def test_the_admin_form_sets_secret_keys(admin_client, acme, booking_template):
    """The rule form has the field and runs the service's check on it."""
    form = {
        "client": acme.pk,
        "event_type": "booking.confirmed",
        "template": "booking-confirmation",
        "recipient_path": "user.email",
        "context_path": "booking",
        "priority": "high",
        "tags": "[]",
    }

    refused = admin_client.post(
        "/admin/event_sends/eventrule/add/", {**form, "secret_keys": '["a b"]'}
    )
    assert refused.status_code == 200
    assert "context key name" in refused.content.decode()
    created = admin_client.post(
        "/admin/event_sends/eventrule/add/", {**form, "secret_keys": '["code"]'}
    )
    assert created.status_code == 302
    assert EventRule.objects.get().secret_keys == ["code"]
